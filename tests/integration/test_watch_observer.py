"""WakeupObserver with real inotify observers (no mocks) and the pure relevance filter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckptd.detect.layouts import write_fsdp_step, write_megatron_step
from ckptd.watch import WakeupObserver, is_relevant

Made = list[WakeupObserver]


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()


@pytest.fixture
def observer_factory(no_thread_leak: None) -> Iterator[list[WakeupObserver]]:
    made: list[WakeupObserver] = []
    yield made
    for obs in made:
        obs.stop()


def started(made: list[WakeupObserver], roots: list[Path], mode: str = "events") -> WakeupObserver:
    obs = WakeupObserver(roots, mode=mode)  # type: ignore[arg-type]
    made.append(obs)
    obs.start()
    return obs


def wakes_within(obs: WakeupObserver, seconds: float) -> float | None:
    t0 = time.monotonic()
    return time.monotonic() - t0 if obs.wait(seconds) else None


@pytest.mark.parametrize(
    ("kind", "is_dir", "src", "dest", "expected"),
    [
        ("closed", False, "/r/e/checkpoints/global_step_1/actor/latest_checkpointed_iteration.txt", "", True),
        ("moved", False, "/r/x/.metadata.tmp", "/r/x/.metadata", True),
        ("closed", False, "/r/x/.metadata.tmp", "", False),
        ("closed", False, "/r/x/full_weights.pt", "", True),
        ("created", False, "/r/x/__0_0.distcp", "", False),
        ("modified", False, "/r/x/full_weights.pt", "", False),
        ("opened", False, "/r/x/latest_checkpointed_iteration.txt", "", False),
        ("closed_no_write", False, "/r/x/latest_checkpointed_iteration.txt", "", False),
        ("created", True, "/r/e/checkpoints/global_step_12", "", True),
        ("created", True, "/r/e/checkpoints/global_step_12-hf", "", False),
        ("created", True, "/r/e/checkpoints", "", True),
        ("created", True, "/r/e/checkpoints/global_step_1/actor/iter_0000001", "", False),
        ("moved", True, "/elsewhere/exp", "/r/exp", True),
        ("deleted", True, "/r/e/checkpoints/global_step_1", "", False),
    ],
)
def test_relevance(kind: str, is_dir: bool, src: str, dest: str, expected: bool) -> None:
    assert is_relevant(kind, is_dir, src, dest) is expected


def test_inotify_wakes_on_tracker_written_last(
    tmp_path: Path, observer_factory: list[WakeupObserver]
) -> None:
    step = tmp_path / "exp" / "checkpoints" / "global_step_1"
    write_megatron_step(step, tracker=None)  # shards first
    obs = started(observer_factory, [tmp_path])
    assert obs.mode == "events"
    obs.clear()
    write_megatron_step(step)  # ...and the tracker last
    elapsed = wakes_within(obs, 2.0)
    assert elapsed is not None and elapsed < 1.0


def test_inotify_wakes_on_dcp_metadata_rename(tmp_path: Path, observer_factory: list[WakeupObserver]) -> None:
    step = tmp_path / "deep" / "er" / "exp" / "checkpoints" / "global_step_3"
    write_fsdp_step(step, metadata=False, full_weights=False)
    obs = started(observer_factory, [tmp_path])
    obs.clear()
    assert not obs.wait(0.2)  # nothing relevant yet
    (step / "actor" / "dcp_checkpoint" / ".metadata.tmp").write_bytes(b"m")
    (step / "actor" / "dcp_checkpoint" / ".metadata.tmp").replace(
        step / "actor" / "dcp_checkpoint" / ".metadata"
    )
    elapsed = wakes_within(obs, 2.0)
    assert elapsed is not None and elapsed < 1.0


def test_shard_writes_and_our_reads_do_not_wake(
    tmp_path: Path, observer_factory: list[WakeupObserver]
) -> None:
    step = write_megatron_step(tmp_path / "exp" / "checkpoints" / "global_step_1")
    obs = started(observer_factory, [tmp_path])
    obs.clear()
    shard = step / "actor" / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    with shard.open("ab") as fh:
        fh.write(b"\0" * 1024)
    (step / "actor" / "latest_checkpointed_iteration.txt").read_text()
    assert not obs.wait(0.3)


def test_poll_mode_starts_no_thread(tmp_path: Path, no_thread_leak: None) -> None:
    before = threading.active_count()
    obs = WakeupObserver([tmp_path], mode="poll")
    obs.start()
    assert threading.active_count() == before and obs.watching == []
    write_megatron_step(tmp_path / "exp" / "checkpoints" / "global_step_1")
    assert not obs.wait(0.1)
    obs.wake()
    assert obs.wait(0)
    obs.stop()


def test_root_created_after_start(tmp_path: Path, observer_factory: list[WakeupObserver]) -> None:
    root = tmp_path / "later" / "runs"
    obs = started(observer_factory, [root])
    assert obs.watching == [str(tmp_path)]  # nearest existing ancestor, until the root appears
    obs.clear()
    root.mkdir(parents=True)
    assert obs.wait(1.0)  # the ancestor watch saw a dir appear
    obs.clear()
    obs.refresh()
    assert obs.watching == [str(root)]
    write_megatron_step(root / "exp" / "checkpoints" / "global_step_1")
    elapsed = wakes_within(obs, 2.0)
    assert elapsed is not None and elapsed < 1.0


def test_recreated_root_is_watched_again(tmp_path: Path, observer_factory: list[WakeupObserver]) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    obs = started(observer_factory, [root])
    root.rmdir()
    obs.refresh()
    assert obs.watching == [str(tmp_path)]
    root.mkdir()
    obs.refresh()
    obs.clear()
    write_megatron_step(root / "exp" / "checkpoints" / "global_step_2")
    assert obs.wait(1.0)


def test_stop_joins_all_threads(tmp_path: Path, no_thread_leak: None) -> None:
    before = threading.active_count()
    obs = WakeupObserver([tmp_path, tmp_path / "missing"], mode="auto")
    obs.start()
    assert obs.mode == "events" and threading.active_count() > before
    obs.stop()
    obs.stop()  # idempotent
    assert threading.active_count() == before


def test_auto_falls_back_to_poll_when_inotify_cannot_start(
    tmp_path: Path, no_thread_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real inotify limit: a watch limit of 0 is what a full fs.inotify.max_user_watches looks like.
    We cannot lower the kernel limit in a test, so the observer factory raises the same ENOSPC."""
    import errno

    import ckptd.watch.observer as observer_module

    def exhausted() -> object:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(observer_module, "_new_observer", exhausted)
    obs = WakeupObserver([tmp_path], mode="auto")
    obs.start()
    assert obs.mode == "poll"
    obs.stop()
    strict = WakeupObserver([tmp_path], mode="events")
    with pytest.raises(observer_module.WatchStartError):
        strict.start()


MOUNTS = """\
overlay / overlay rw,relatime 0 0
server:/export /data/runs nfs4 rw,vers=4.2 0 0
/dev/sdb1 /data/runs/local ext4 rw 0 0
lustre@o2ib:/fs /mnt/my\\040lustre lustre rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/runs/exp", "nfs4"),
        ("/data/runs", "nfs4"),
        ("/data/runs/local/exp", "ext4"),
        ("/data/runsx", "overlay"),
        ("/mnt/my lustre/a", "lustre"),
        ("/tmp", "overlay"),
    ],
)
def test_filesystem_type(path: str, expected: str) -> None:
    from ckptd.watch.fstype import filesystem_type

    assert filesystem_type(path, MOUNTS) == expected


def test_auto_uses_poll_when_every_root_is_on_network_fs(
    tmp_path: Path, no_thread_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckptd.watch import fstype

    mounts = tmp_path / "mounts"
    mounts.write_text(f"overlay / overlay rw 0 0\nserver:/x {tmp_path} nfs rw 0 0\n")
    monkeypatch.setattr(fstype, "PROC_MOUNTS", mounts)
    before = threading.active_count()
    obs = WakeupObserver([tmp_path / "runs"], mode="auto")
    obs.start()
    assert obs.mode == "poll" and threading.active_count() == before
    obs.stop()
    forced = WakeupObserver([tmp_path / "runs"], mode="events")  # explicit events: watch anyway
    forced.start()
    assert forced.watching == [str(tmp_path)]
    forced.stop()
