from __future__ import annotations

from pathlib import Path

import pytest

from ckptd.queue.errors import InvalidTransitionError, JobNotFoundError
from ckptd.queue.states import JobState
from tests.integration.queue_support import LEASE_S, FakeClock, enqueue_step, new_repo


def test_enqueue_is_idempotent_per_source_and_output(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    first, created = repo.enqueue(
        source="/r/a/checkpoints/global_step_5", output="/hf/a/global_step_5", experiment="a", step=5,
        format="fsdp_dcp", watch_root="/r", options={"base_model": "/m", "dtype": "bf16"}, max_attempts=3,
    )  # fmt: skip
    again, created_again = repo.enqueue(
        source="/r/a/checkpoints/global_step_5", output="/hf/a/global_step_5", experiment="a", step=5,
        format="fsdp_dcp", watch_root="/r", options={"dtype": "fp32"}, max_attempts=9,
    )  # fmt: skip
    other_target, created_other = repo.enqueue(
        source="/r/a/checkpoints/global_step_5", output="/hf/a-adapter/global_step_5", experiment="a",
        step=5, format="fsdp_dcp", watch_root="/r", options={}, max_attempts=3,
    )  # fmt: skip

    assert created and not created_again and created_other
    assert again == first
    assert first.options == {"base_model": "/m", "dtype": "bf16"}
    assert first.state == JobState.QUEUED and first.attempts == 0 and first.fencing_token == 0
    assert other_target.id != first.id
    assert [e.event for e in repo.events(first.id)] == ["enqueued"]


def test_enqueue_never_resets_a_done_job(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    job = enqueue_step(repo, 10)
    claim = repo.claim("w1", LEASE_S)
    assert claim is not None
    repo.publish_and_finish(job.id, claim.token, lambda: None, {"shards": 2})

    again = enqueue_step(repo, 10)

    assert again.state == JobState.DONE
    assert again.result == {"shards": 2}


def test_claims_newest_step_first_then_priority_overrides(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    for step in (100, 300, 200):
        enqueue_step(repo, step)
    urgent = enqueue_step(repo, 50, experiment="urgent", priority=5)

    claimed = [repo.claim("w", LEASE_S) for _ in range(5)]

    steps = [c.job.step for c in claimed if c is not None]
    assert steps == [urgent.step, 300, 200, 100]
    assert claimed[-1] is None


def test_claim_sets_lease_attempt_worker_and_a_fresh_token(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    job = enqueue_step(repo, 1)

    claim = repo.claim("host:123", 60.0)

    assert claim is not None and claim.job.id == job.id
    assert claim.job.state == JobState.RUNNING
    assert claim.job.worker_id == "host:123"
    assert claim.job.attempts == 1
    assert claim.token == claim.job.fencing_token == 1
    assert claim.job.lease_expires_at == clock.now + 60.0
    assert claim.job.started_at == clock.now
    assert repo.events(job.id)[-1].event == "claimed"


def test_heartbeat_extends_the_lease(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    enqueue_step(repo, 1)
    claim = repo.claim("w", 10.0)
    assert claim is not None

    clock.advance(8.0)
    assert repo.heartbeat(claim.job.id, claim.token, 10.0)
    clock.advance(8.0)

    assert repo.reap() == []
    assert repo.require(claim.job.id).lease_expires_at == clock.now + 2.0


def test_failed_attempts_back_off_with_full_jitter_then_go_dead_with_the_last_error(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock, backoff_base_s=10.0, backoff_cap_s=25.0)
    job = enqueue_step(repo, 1, max_attempts=3)
    ceilings = [10.0, 20.0]

    for attempt, ceiling in enumerate(ceilings, start=1):
        claim = repo.claim("w", LEASE_S)
        assert claim is not None and claim.job.attempts == attempt
        state = repo.fail(job.id, claim.token, f"boom {attempt}\n  traceback line", permanent=False)
        assert state == JobState.FAILED
        failed = repo.require(job.id)
        assert failed.last_error == f"boom {attempt} traceback line"
        assert failed.not_before is not None
        assert clock.now <= failed.not_before <= clock.now + ceiling
        assert repo.claim("w", LEASE_S) is None or failed.not_before == clock.now  # not due before not_before
        clock.now = failed.not_before

    claim = repo.claim("w", LEASE_S)
    assert claim is not None and claim.job.attempts == 3
    assert repo.fail(job.id, claim.token, "boom 3", permanent=False) == JobState.DEAD
    dead = repo.require(job.id)
    assert (dead.state, dead.last_error, dead.not_before) == (JobState.DEAD, "boom 3", None)
    assert repo.claim("w", LEASE_S) is None
    assert [e.event for e in repo.events(job.id)].count("failed") == 2
    assert repo.events(job.id)[-1].event == "gave_up"


def test_permanent_error_goes_dead_at_once(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    job = enqueue_step(repo, 1, max_attempts=5)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    state = repo.fail(job.id, claim.token, "unsupported architecture: gpt_oss", permanent=True)

    dead = repo.require(job.id)
    assert state == dead.state == JobState.DEAD
    assert dead.attempts == 1
    assert dead.last_error == "unsupported architecture: gpt_oss"


def test_reaper_requeues_expired_leases_and_kills_exhausted_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    retryable = enqueue_step(repo, 2, max_attempts=2)
    exhausted = enqueue_step(repo, 1, max_attempts=1)
    first, second = repo.claim("w1", 5.0), repo.claim("w1", 50.0)
    assert first is not None and second is not None

    clock.advance(10.0)
    assert repo.reap() == [retryable.id]
    clock.advance(50.0)
    assert repo.reap() == [exhausted.id]

    requeued, dead = repo.require(retryable.id), repo.require(exhausted.id)
    assert (requeued.state, requeued.attempts, requeued.worker_id) == (JobState.QUEUED, 1, None)
    assert dead.state == JobState.DEAD
    assert dead.last_error == "lease expired 1 times (worker died?)"
    assert repo.events(retryable.id)[-1].event == "lease_expired"


def test_reaper_counts_expiries_in_the_final_error(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    job = enqueue_step(repo, 1, max_attempts=3)
    for _ in range(3):
        assert repo.claim("w", 5.0) is not None
        clock.advance(6.0)
        assert repo.reap() == [job.id]

    dead = repo.require(job.id)
    assert dead.state == JobState.DEAD
    assert dead.last_error == "lease expired 3 times (worker died?)"


def test_a_fenced_out_worker_can_neither_heartbeat_nor_finish_nor_fail(tmp_path: Path) -> None:
    from ckptd.errors import LeaseLostError

    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    job = enqueue_step(repo, 1)
    old = repo.claim("slow-worker", 5.0)
    assert old is not None
    clock.advance(6.0)
    assert repo.reap() == [job.id]
    new = repo.claim("replacement", 5.0)
    assert new is not None and new.token > old.token
    published: list[str] = []

    assert repo.heartbeat(job.id, old.token, 5.0) is False
    with pytest.raises(LeaseLostError, match="lease lost"):
        repo.publish_and_finish(job.id, old.token, lambda: published.append("old"), {})
    with pytest.raises(LeaseLostError):
        repo.fail(job.id, old.token, "late failure", permanent=True)
    with pytest.raises(LeaseLostError):
        repo.release(job.id, old.token, "shutdown")
    with pytest.raises(LeaseLostError):
        repo.hold(job.id, old.token, "disk full", clock.now + 60)

    assert published == []
    assert repo.require(job.id).state == JobState.RUNNING
    repo.publish_and_finish(job.id, new.token, lambda: published.append("new"), {"ok": True})
    assert published == ["new"]
    assert repo.require(job.id).state == JobState.DONE


def test_a_failing_publish_writes_nothing(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    job = enqueue_step(repo, 1)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    def broken_rename() -> None:
        raise OSError("rename failed")

    with pytest.raises(OSError, match="rename failed"):
        repo.publish_and_finish(job.id, claim.token, broken_rename, {})
    assert repo.require(job.id).state == JobState.RUNNING
    assert repo.heartbeat(job.id, claim.token, LEASE_S)


def test_release_requeues_without_counting_the_attempt(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    job = enqueue_step(repo, 1)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    repo.release(job.id, claim.token, "SIGTERM")

    released = repo.require(job.id)
    assert (released.state, released.attempts, released.worker_id) == (JobState.QUEUED, 0, None)
    assert repo.events(job.id)[-1].message == "SIGTERM"


def test_hold_parks_the_job_until_the_given_time(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    job = enqueue_step(repo, 1)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    repo.hold(job.id, claim.token, "disk guard: 2 GiB free < 50 GiB", clock.now + 120)

    assert repo.require(job.id).state == JobState.WAITING
    assert repo.claim("w", LEASE_S) is None
    clock.advance(120)
    again = repo.claim("w", LEASE_S)
    assert again is not None and again.job.id == job.id and again.job.attempts == 1


def test_cancel_a_running_job_makes_its_heartbeat_fail(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    job = enqueue_step(repo, 1)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    cancelled = repo.cancel(job.id)

    assert cancelled.state == JobState.CANCELLED
    assert cancelled.finished_at is not None and cancelled.lease_expires_at is None
    assert repo.events(job.id)[-1].event == "cancelled"
    assert repo.heartbeat(job.id, claim.token, LEASE_S) is False
    assert repo.claim("w", LEASE_S) is None
    with pytest.raises(InvalidTransitionError):
        repo.cancel(job.id)


def test_retry_revives_dead_cancelled_and_done_jobs_with_attempts_reset(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    dead, cancelled, done, queued = (enqueue_step(repo, step) for step in (4, 3, 2, 1))
    repo.cancel(cancelled.id)
    for job in (dead, done):
        claim = repo.claim("w", LEASE_S)
        assert claim is not None and claim.job.id == job.id
        if job is dead:
            repo.fail(job.id, claim.token, "corrupt shard", permanent=True)
        else:
            repo.publish_and_finish(job.id, claim.token, lambda: None, {})

    for job in (dead, cancelled, done):
        revived = repo.retry(job.id)
        assert (revived.state, revived.attempts, revived.last_error) == (JobState.QUEUED, 0, None)
    with pytest.raises(InvalidTransitionError):
        repo.retry(queued.id)
    running = repo.claim("w", LEASE_S)
    assert running is not None
    with pytest.raises(InvalidTransitionError, match="is running; only cancelled, dead, done, failed jobs"):
        repo.retry(running.job.id)
    repo.release(running.job.id, running.token, "test")
    with pytest.raises(JobNotFoundError):
        repo.retry(999)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None and claim.job.id == dead.id and claim.token == 3  # tokens never go back


def test_every_state_change_is_an_event_row(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock, backoff_base_s=1.0, backoff_cap_s=1.0)
    job = enqueue_step(repo, 1)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None
    repo.fail(job.id, claim.token, "oom", permanent=False)
    clock.advance(2.0)
    claim = repo.claim("w", LEASE_S)
    assert claim is not None
    repo.publish_and_finish(job.id, claim.token, lambda: None, {})

    events = repo.events(job.id)
    assert [(e.event, e.from_state, e.to_state) for e in events] == [
        ("enqueued", None, "queued"),
        ("claimed", "queued", "running"),
        ("failed", "running", "failed"),
        ("claimed", "failed", "running"),
        ("finished", "running", "done"),
    ]
    assert events[2].message == "oom" and events[1].worker_id == "w"


def test_list_counts_and_filters(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    for step in (1, 2, 3):
        enqueue_step(repo, step, experiment="a")
    enqueue_step(repo, 1, experiment="b")
    claim = repo.claim("w", LEASE_S)
    assert claim is not None

    assert repo.counts() == {
        "queued": 3, "running": 1, "done": 0, "failed": 0, "dead": 0, "cancelled": 0, "waiting": 0,
    }  # fmt: skip
    assert [j.step for j in repo.list_jobs(experiment="a")] == [1, 2, 3]
    assert [j.id for j in repo.list_jobs(states=[JobState.RUNNING])] == [claim.job.id]
    assert len(repo.list_jobs(limit=2)) == 2
    assert repo.get(12345) is None


def test_worker_registry(tmp_path: Path) -> None:
    clock = FakeClock()
    repo = new_repo(tmp_path, clock)
    repo.register_worker("host:1", 1, "host")
    clock.advance(5)
    assert repo.worker_heartbeat("host:1")
    clock.advance(5)
    assert repo.worker_stopped("host:1")
    assert not repo.worker_heartbeat("nobody")
    repo.register_worker("host:1", 2, "host")  # a restarted worker reuses its id

    [worker] = repo.list_workers()
    assert (worker.id, worker.pid, worker.stopped_at) == ("host:1", 2, None)
    assert worker.started_at == worker.heartbeat_at == clock.now
