"""Discovery and the scanner on real trees in tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ckptd.detect.layouts import write_fsdp_step, write_full_weights, write_megatron_step
from ckptd.watch import Scanner, StepDir, find_step_dirs


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def steps(found: list[StepDir]) -> list[tuple[str, int]]:
    return [(s.experiment, s.step) for s in found]


def test_experiments_at_several_depths(tmp_path: Path) -> None:
    for exp in ["a", "group/b", "x/y/z/c", "x/y/z/w/too_deep"]:
        (tmp_path / exp / "checkpoints" / "global_step_1").mkdir(parents=True)
    found = find_step_dirs(tmp_path, max_depth=4)
    assert steps(found) == [("a", 1), ("group/b", 1), ("x/y/z/c", 1)]
    assert [s.root for s in found] == [tmp_path] * 3
    assert found[0].path == tmp_path / "a/checkpoints/global_step_1"
    assert steps(find_step_dirs(tmp_path, max_depth=1)) == [("a", 1)]
    assert ("x/y/z/w/too_deep", 1) in steps(find_step_dirs(tmp_path, max_depth=5))


def test_root_holding_checkpoints_uses_root_name(tmp_path: Path) -> None:
    root = tmp_path / "myexp"
    (root / "checkpoints" / "global_step_3").mkdir(parents=True)
    assert steps(find_step_dirs(root)) == [("myexp", 3)]


def test_ignored_names_and_hidden_dirs(tmp_path: Path) -> None:
    ckpts = tmp_path / "exp" / "checkpoints"
    for name in ["global_step_2", "global_step_10-hf", "global_step_x", "best_model", "converted_ckpts"]:
        (ckpts / name).mkdir(parents=True)
    (ckpts / "global_step_5").write_text("a file, not a dir")
    (tmp_path / ".hidden" / "checkpoints" / "global_step_1").mkdir(parents=True)
    # A step dir outside checkpoints/ is not a checkpoint and is not entered.
    (tmp_path / "global_step_9" / "checkpoints" / "global_step_1").mkdir(parents=True)
    assert steps(find_step_dirs(tmp_path)) == [("exp", 2)]


def test_does_not_descend_below_an_experiment_or_into_steps(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    (exp / "checkpoints" / "global_step_1" / "nested" / "checkpoints" / "global_step_7").mkdir(parents=True)
    (exp / "tensorboard" / "checkpoints" / "global_step_8").mkdir(parents=True)
    assert steps(find_step_dirs(tmp_path)) == [("exp", 1)]


def test_symlink_loop_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "exp" / "checkpoints" / "global_step_1").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "alias").symlink_to(tmp_path / "exp", target_is_directory=True)
    found = find_step_dirs(tmp_path, max_depth=10)
    assert len(found) == 1  # the same experiment is not reported twice via the symlinks


def test_missing_root_is_skipped(tmp_path: Path) -> None:
    errors: list[Path] = []
    assert find_step_dirs(tmp_path / "nope", on_error=lambda p, e: errors.append(p)) == []
    assert errors == [tmp_path / "nope"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses directory permissions (chmod 000)")
def test_permission_denied_dir_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "ok" / "checkpoints" / "global_step_1").mkdir(parents=True)
    locked = tmp_path / "locked"
    (locked / "exp" / "checkpoints" / "global_step_1").mkdir(parents=True)
    locked.chmod(0)
    try:
        result = Scanner([tmp_path], settle_seconds=0).scan()
    finally:
        locked.chmod(0o755)
    assert result.skipped == 1
    assert [r.experiment for r in result.incomplete] == ["ok"]


def test_unreadable_entries_are_skipped_even_as_root(tmp_path: Path) -> None:
    """A real failure that root cannot bypass: a path component that is a file (ENOTDIR) and a
    checkpoints/ symlink that dangles."""
    write_megatron_step(tmp_path / "good" / "checkpoints" / "global_step_1")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoints").symlink_to(tmp_path / "gone", target_is_directory=True)
    file_root = (
        tmp_path / "good" / "checkpoints" / "global_step_1" / "actor" / "latest_checkpointed_iteration.txt"
    )
    scanner = Scanner([tmp_path, file_root], settle_seconds=0)
    result = scanner.scan()
    assert [(r.experiment, r.step) for r in result.complete] == [("good", 1)]
    assert result.skipped >= 1


def test_step_dir_deleted_mid_scan(tmp_path: Path) -> None:
    """find_step_dirs saw the step; the trainer's keep-last-N deleted it before it was listed."""
    step = write_fsdp_step(tmp_path / "exp" / "checkpoints" / "global_step_1")
    write_fsdp_step(tmp_path / "exp" / "checkpoints" / "global_step_2")
    scanner = Scanner([tmp_path], settle_seconds=0)
    found = find_step_dirs(tmp_path)
    shutil.rmtree(step)
    scanner._check(found[0], later_sibling=True, now=0.0)  # the race, made deterministic
    assert scanner._result.skipped == 1 and not scanner._result.complete
    result = scanner.scan()
    assert [r.step for r in result.complete] == [2]


def test_incomplete_to_complete_across_scans(tmp_path: Path) -> None:
    clock = FakeClock()
    ckpts = tmp_path / "runs" / "exp" / "checkpoints"
    step1 = write_fsdp_step(ckpts / "global_step_1", metadata=False, full_weights=False)
    scanner = Scanner([tmp_path / "runs"], settle_seconds=30, clock=clock)

    first = scanner.scan()
    assert not first.complete and "waiting for" in first.incomplete[0].reason
    assert first.recheck_in is None  # waiting for a marker, not for a settle window

    write_fsdp_step(step1)  # .metadata by rename: the DCP is complete at once
    clock.now += 10
    second = scanner.scan()
    assert [(r.experiment, r.step, r.format) for r in second.complete] == [("exp", 1, "fsdp")]
    assert second.new == second.complete

    third = scanner.scan()
    assert third.complete == second.complete and third.new == []


def test_full_weights_only_step_settles_across_scans(tmp_path: Path) -> None:
    clock = FakeClock()
    write_full_weights(tmp_path / "runs/exp/checkpoints/global_step_1/actor/model_state_dict/full_weights.pt")
    scanner = Scanner([tmp_path / "runs"], settle_seconds=30, clock=clock)
    first = scanner.scan()
    assert not first.complete and "first seen" in first.incomplete[0].reason
    assert first.recheck_in == 30
    clock.now += 12
    assert scanner.scan().recheck_in == 18
    clock.now += 18
    done = scanner.scan()
    assert [(r.step, r.layout) for r in done.complete] == [(1, "full_weights")]


def test_later_step_completes_earlier_one_at_once(tmp_path: Path) -> None:
    ckpts = tmp_path / "exp" / "checkpoints"
    write_fsdp_step(ckpts / "global_step_1")
    write_megatron_step(ckpts / "global_step_2", iteration=2)
    result = Scanner([tmp_path], settle_seconds=30).scan()
    assert [(r.step, r.format) for r in result.complete] == [(1, "fsdp"), (2, "megatron")]


def test_known_complete_steps_cost_one_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for exp in range(3):
        write_megatron_step(tmp_path / f"e{exp}" / "checkpoints" / "global_step_1")
    scanner = Scanner([tmp_path], settle_seconds=0)
    assert len(scanner.scan().complete) == 3
    import ckptd.watch.scanner as scanner_module

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("list_step called for an unchanged complete step")

    monkeypatch.setattr(scanner_module, "list_step", no_listing)
    assert len(scanner.scan().complete) == 3


def test_rewritten_marker_gives_new_fingerprint(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "exp" / "checkpoints" / "global_step_4")
    scanner = Scanner([tmp_path], settle_seconds=0)
    before = scanner.scan().complete[0]
    tracker = step / "actor" / "latest_checkpointed_iteration.txt"
    st = tracker.stat()
    os.utime(tracker, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = scanner.scan()
    assert after.complete[0].fingerprint != before.fingerprint
    assert after.new == after.complete


def test_deleted_steps_are_forgotten(tmp_path: Path) -> None:
    ckpts = tmp_path / "exp" / "checkpoints"
    for n in (1, 2, 3):
        write_megatron_step(ckpts / f"global_step_{n}")
    scanner = Scanner([tmp_path], settle_seconds=0)
    assert len(scanner.scan().complete) == 3
    shutil.rmtree(ckpts / "global_step_1")
    assert [r.step for r in scanner.scan().complete] == [2, 3]
    assert all(not k.endswith("global_step_1") for k in scanner._complete)


def test_ignored_steps_are_reported_with_reason(tmp_path: Path) -> None:
    step = tmp_path / "exp" / "checkpoints" / "global_step_1"
    (step / "critic").mkdir(parents=True)
    result = Scanner([tmp_path]).scan()
    assert result.ignored[0].reason.startswith("only critic/")
