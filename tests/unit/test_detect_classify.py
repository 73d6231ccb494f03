"""Detection rules on real files in tmp_path: list_step (I/O) + classify (pure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptd.detect import (
    Classification,
    Complete,
    Incomplete,
    NotACheckpoint,
    Observation,
    classify,
    list_step,
    observe,
    parse_step_dir_name,
)
from ckptd.detect.layouts import write_fsdp_step, write_full_weights, write_megatron_step

SETTLE = 30.0


def run(
    step_dir: Path, previous: Observation | None = None, now: float = 1000.0, settle: float = SETTLE
) -> Classification:
    return classify(list_step(step_dir), previous, now, settle)


def settled(step_dir: Path, settle: float = SETTLE) -> Classification:
    """Classify twice, ``settle`` seconds apart, with nothing changing in between."""
    first = observe(list_step(step_dir), None, 1000.0)
    return run(step_dir, first, now=1000.0 + settle, settle=settle)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("global_step_10", 10),
        ("global_step_0", 0),
        ("global_step_10-hf", None),
        ("global_step_x", None),
        ("global_step_", None),
        ("best_model", None),
        ("converted_ckpts", None),
        ("xglobal_step_1", None),
        ("global_step_1 ", None),
    ],
)
def test_parse_step_dir_name(name: str, expected: int | None) -> None:
    assert parse_step_dir_name(name) == expected


# --- Megatron ---------------------------------------------------------------------------------


def test_megatron_complete(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_100")
    result = run(step)
    assert isinstance(result, Complete)
    assert (result.format, result.step, result.iteration, result.layout) == ("megatron", 100, 100, "legacy")
    assert result.marker == "actor/latest_checkpointed_iteration.txt"
    assert "iter=100" in result.fingerprint


def test_megatron_tracker_with_newline(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_7", tracker="7\n")
    assert isinstance(run(step), Complete)


def test_megatron_waits_for_tracker(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_5", tracker=None)
    result = run(step)
    assert isinstance(result, Incomplete)
    assert "waiting for latest_checkpointed_iteration.txt" in result.reason


def test_megatron_tracker_content_mismatch(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_5", tracker="6")
    result = run(step)
    assert isinstance(result, Incomplete)
    assert "iter_0000006" in result.reason and "missing" in result.reason


@pytest.mark.parametrize("content", ["", "  \n", "12a", "release!"])
def test_megatron_tracker_garbage_or_empty(tmp_path: Path, content: str) -> None:
    step = write_megatron_step(tmp_path / "global_step_12")
    (step / "actor/latest_checkpointed_iteration.txt").write_text(content)
    assert isinstance(run(step), Incomplete)


def test_megatron_release_is_not_a_training_step(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_3", tracker="release")
    (step / "actor/release").mkdir()
    result = run(step)
    assert isinstance(result, NotACheckpoint)
    assert "release" in result.reason


def test_megatron_missing_mp_rank_dirs(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_4", ranks=())
    result = run(step)
    assert isinstance(result, Incomplete)
    assert "no mp_rank_*" in result.reason


def test_megatron_expert_parallel_rank_names(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_4", ranks=("mp_rank_00_000", "mp_rank_01_001_002"))
    assert isinstance(run(step), Complete)


def test_megatron_torch_dist(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_9", ranks=())
    (step / "actor/iter_0000009/.metadata").write_bytes(b"m")
    result = run(step)
    assert isinstance(result, Complete) and result.layout == "torch_dist"


def test_megatron_fingerprint_follows_tracker_rewrite(tmp_path: Path) -> None:
    step = write_megatron_step(tmp_path / "global_step_8")
    first = run(step)
    tracker = step / "actor/latest_checkpointed_iteration.txt"
    st = tracker.stat()
    os.utime(tracker, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = run(step)
    assert isinstance(first, Complete) and isinstance(second, Complete)
    assert first.fingerprint != second.fingerprint
    assert run(step) == second


# --- FSDP -------------------------------------------------------------------------------------


def test_fsdp_metadata_tmp_only(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2", metadata=False, full_weights=False)
    (step / "actor/dcp_checkpoint/.metadata.tmp").write_bytes(b"partial")
    result = run(step)
    assert isinstance(result, Incomplete)
    assert ".metadata" in result.reason and ".metadata.tmp present" in result.reason


def test_fsdp_shards_only_waits(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2", metadata=False, full_weights=False)
    result = run(step)
    assert isinstance(result, Incomplete) and "2 .distcp" in result.reason


def fw_only(tmp_path: Path, numel: int = 16) -> Path:
    """An FSDP step with only ``model_state_dict/full_weights.pt`` (no DCP): the settle rules apply."""
    step = tmp_path / "global_step_2"
    write_full_weights(step / "actor/model_state_dict/full_weights.pt", numel=numel)
    return step


@pytest.mark.parametrize("full_weights", [True, False])
def test_fsdp_dcp_metadata_is_complete_at_once(tmp_path: Path, full_weights: bool) -> None:
    # The DCP is what gets converted, so a still-growing full_weights.pt beside it does not matter.
    step = write_fsdp_step(tmp_path / "global_step_2", full_weights=full_weights)
    result = run(step)
    assert isinstance(result, Complete)
    assert (result.format, result.layout, result.marker) == ("fsdp", "dcp", "actor/dcp_checkpoint/.metadata")


def test_fsdp_dcp_complete_beside_half_written_full_weights(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2")
    fw = step / "actor/model_state_dict/full_weights.pt"
    fw.write_bytes(fw.read_bytes()[:50])
    result = run(step)
    assert isinstance(result, Complete) and result.layout == "dcp"


def test_fsdp_full_weights_complete_after_settle(tmp_path: Path) -> None:
    step = fw_only(tmp_path)
    assert isinstance(run(step), Incomplete)  # first sighting
    result = settled(step)
    assert isinstance(result, Complete) and result.layout == "full_weights"


def test_fsdp_settle_window_not_over_yet(tmp_path: Path) -> None:
    step = fw_only(tmp_path)
    first = observe(list_step(step), None, 1000.0)
    result = run(step, first, now=1000.0 + SETTLE - 1)
    assert isinstance(result, Incomplete) and "settle window" in result.reason


def test_fsdp_old_layout_in_actor(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2", old_layout=True, full_weights=False)
    result = run(step)
    assert isinstance(result, Complete) and result.marker == "actor/.metadata"


def test_fsdp_settle_zero_means_immediately(tmp_path: Path) -> None:
    assert isinstance(run(fw_only(tmp_path), settle=0), Complete)


def test_truncated_full_weights_is_incomplete(tmp_path: Path) -> None:
    step = fw_only(tmp_path)
    fw = step / "actor/model_state_dict/full_weights.pt"
    data = fw.read_bytes()
    fw.write_bytes(data[: len(data) // 2])
    result = settled(step)
    assert isinstance(result, Incomplete) and "not a readable zip" in result.reason


def test_size_changing_restarts_the_settle_window(tmp_path: Path) -> None:
    step = fw_only(tmp_path)
    obs = observe(list_step(step), None, 1000.0)
    write_full_weights(step / "actor/model_state_dict/full_weights.pt", numel=4096)  # grew
    changed = run(step, obs, now=1000.0 + SETTLE)
    assert isinstance(changed, Incomplete) and "size still changing" in changed.reason
    obs = observe(list_step(step), obs, 1000.0 + SETTLE)
    assert obs.since == 1000.0 + SETTLE
    assert isinstance(run(step, obs, now=1000.0 + SETTLE + 5), Incomplete)
    assert isinstance(run(step, obs, now=1000.0 + 2 * SETTLE), Complete)


def test_observe_keeps_previous_while_unchanged(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2")
    first = observe(list_step(step), None, 1.0)
    assert observe(list_step(step), first, 50.0) is first


@pytest.mark.parametrize("marker", ["later_sibling", "data_pt"])
def test_later_step_or_data_pt_proves_full_weights_done(tmp_path: Path, marker: str) -> None:
    step = fw_only(tmp_path)
    if marker == "later_sibling":
        (tmp_path / "global_step_3").mkdir()
    else:
        (step / "data").mkdir()
        write_full_weights(step / "data" / "data.pt")
    result = run(step)  # no previous observation needed
    assert isinstance(result, Complete) and "later step" in result.reason


def test_later_sibling_does_not_rescue_missing_dcp_metadata(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2", metadata=False, full_weights=False)
    (tmp_path / "global_step_3").mkdir()
    assert isinstance(run(step), NotACheckpoint)


def test_full_weights_only(tmp_path: Path) -> None:
    step = tmp_path / "global_step_6"
    write_full_weights(step / "actor/model_state_dict/full_weights.pt")
    assert isinstance(run(step), Incomplete)
    result = settled(step)
    assert isinstance(result, Complete)
    assert result.layout == "full_weights" and result.marker.endswith("full_weights.pt")


def test_full_weights_docs_misspelling(tmp_path: Path) -> None:
    step = tmp_path / "global_step_6"
    write_full_weights(step / "actor/model_state_dict/full_weigths.pt")
    result = settled(step)
    assert isinstance(result, Complete) and result.marker.endswith("full_weigths.pt")


def test_full_weights_only_truncated_with_later_sibling_is_never_complete(tmp_path: Path) -> None:
    step = tmp_path / "global_step_6"
    fw = write_full_weights(step / "actor/model_state_dict/full_weights.pt")
    fw.write_bytes(fw.read_bytes()[:100])
    (tmp_path / "global_step_7").mkdir()
    result = run(step)
    assert isinstance(result, Incomplete) and "corrupt" in result.reason


def test_dcp_complete_beside_truncated_full_weights_with_later_sibling(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2")
    fw = step / "actor/model_state_dict/full_weights.pt"
    fw.write_bytes(fw.read_bytes()[:100])
    (tmp_path / "global_step_3").mkdir()
    result = run(step)
    assert isinstance(result, Complete) and result.layout == "dcp"


def test_fingerprint_ignores_full_weights_appearing_later(tmp_path: Path) -> None:
    step = write_fsdp_step(tmp_path / "global_step_2", full_weights=False)
    (tmp_path / "global_step_3").mkdir()
    before = run(step)
    write_full_weights(step / "actor/model_state_dict/full_weights.pt")
    after = run(step)
    assert isinstance(before, Complete) and isinstance(after, Complete)
    assert before.fingerprint == after.fingerprint


# --- not checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["best_model", "converted_ckpts", "global_step_10-hf", "global_step_x"])
def test_ignored_names(tmp_path: Path, name: str) -> None:
    step = write_fsdp_step(tmp_path / name)
    assert isinstance(run(step, settle=0), NotACheckpoint)


def test_critic_alone_is_not_convertible(tmp_path: Path) -> None:
    step = tmp_path / "global_step_1"
    (step / "critic").mkdir(parents=True)
    result = run(step)
    assert isinstance(result, NotACheckpoint) and "critic" in result.reason


def test_fresh_step_dir_waits_for_actor(tmp_path: Path) -> None:
    step = tmp_path / "global_step_1"
    step.mkdir()
    result = run(step)
    assert isinstance(result, Incomplete) and "actor" in result.reason


def test_list_step_raises_for_vanished_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list_step(tmp_path / "global_step_1")
