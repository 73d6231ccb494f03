"""The queue API workers, the scanner and the CLI use: enqueue, claim, heartbeat, finish, fail, reap.

Each method is one short transaction; none is ever held across a conversion (pitfalls.md 18), except
:meth:`JobRepository.publish_and_finish`, which holds the write lock only for the caller's rename.
Writes by a worker present the fencing token from its :class:`Claim`; a stale token changes nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from ckptd.queue import queries
from ckptd.queue.backoff import DEFAULT_BASE_S, DEFAULT_CAP_S, Backoff
from ckptd.queue.dialect import POSTGRESQL, SNAPSHOT_COLUMNS, claim_candidate, insert_unless_exists
from ckptd.queue.engine import read_transaction, write_transaction
from ckptd.queue.errors import InvalidTransitionError, JobNotFoundError
from ckptd.queue.models import jobs
from ckptd.queue.records import Claim, Job, JobEvent, Worker, job_from_row, one_line, to_json
from ckptd.queue.states import INITIAL_STATE, RETRYABLE_STATES, TERMINAL_STATES, JobState
from ckptd.queue.transitions import Snapshot, apply, owned_snapshot, read_snapshot, record_event
from ckptd.queue.workers import Clock, WorkerRegistry

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "Claim",
    "Clock",
    "Event",
    "Job",
    "JobEvent",
    "JobRepository",
    "JobState",
    "Worker",
]

DEFAULT_MAX_ATTEMPTS = 5


class Event(StrEnum):
    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    FINISHED = "finished"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    RELEASED = "released"
    HELD = "held"
    LEASE_EXPIRED = "lease_expired"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    HOOK_DONE = "hook_done"
    HOOK_FAILED = "hook_failed"


# Fields cleared whenever a job stops running, so a queued job never shows a stale lease.
_NOT_RUNNING = {"lease_expires_at": None, "heartbeat_at": None}

# Not a state change: only the owner's lease moves. SET columns come from the execute() parameters.
_HEARTBEAT = update(jobs).where(
    jobs.c.id == bindparam("expected_id"),
    jobs.c.state == JobState.RUNNING,
    jobs.c.fencing_token == bindparam("expected_token"),
)
_EXPIRED_LEASES = (
    select(*SNAPSHOT_COLUMNS)
    .where(jobs.c.state == JobState.RUNNING, jobs.c.lease_expires_at < bindparam("now"))
    .order_by(jobs.c.id)
)
# PostgreSQL: skip a job whose owner is finishing it right now (it holds the row lock); SQLite: see dialect.
_EXPIRED_LEASES_LOCKING = _EXPIRED_LEASES.with_for_update(skip_locked=True)


def _insert_new_job(connection: Connection, values: dict[str, Any], now: float) -> bool:
    """Insert a queued job unless (source, output) exists; True when inserted."""
    fresh = {"state": INITIAL_STATE, "attempts": 0, "fencing_token": 0, "created_at": now, "updated_at": now}
    stmt = insert_unless_exists(connection.dialect.name, {**values, **fresh}, ("source", "output"))
    new_id = connection.execute(stmt.returning(jobs.c.id)).scalar()
    if new_id is None:
        return False
    record_event(
        connection, job_id=new_id, event=Event.ENQUEUED, now=now, from_state=None, to_state=INITIAL_STATE
    )
    return True


class JobRepository(WorkerRegistry):
    """The job queue on one database; also the worker registry (see :class:`WorkerRegistry`)."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock = time.time,
        *,
        backoff_base_s: float = DEFAULT_BASE_S,
        backoff_cap_s: float = DEFAULT_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(engine, clock)
        self._backoff = Backoff(backoff_base_s, backoff_cap_s, rng or random.Random())

    # -- producers ---------------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        source: str,
        output: str,
        experiment: str,
        step: int,
        format: str,
        watch_root: str,
        options: Mapping[str, Any],
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        priority: int = 0,
    ) -> tuple[Job, bool]:
        """The job for (source, output), and whether this call created it; an existing one is untouched."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        now = self._clock()
        values = {
            "source": source,
            "output": output,
            "experiment": experiment,
            "step": step,
            "format": format,
            "watch_root": watch_root,
            "options": to_json(options),
            "priority": priority,
            "max_attempts": max_attempts,
        }
        with write_transaction(self.engine) as connection:
            created = _insert_new_job(connection, values, now)
            job = queries.get_job_by_target(connection, source, output)
        assert job is not None  # inserted or already there, inside this same transaction
        return job, created

    # -- workers -----------------------------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float) -> Claim | None:
        """Take the next due job (newest step first) for ``lease_seconds``; None when nothing is due."""
        now = self._clock()
        with write_transaction(self.engine) as connection:
            candidate_query = claim_candidate(connection.dialect.name)
            candidate = connection.execute(candidate_query, {"now": now}).mappings().first()
            if candidate is None:
                return None
            snapshot = Snapshot.from_row(candidate)
            row = apply(connection, snapshot, JobState.RUNNING, event=Event.CLAIMED, now=now,
                        worker_id=worker_id, values={
                            "worker_id": worker_id,
                            "attempts": snapshot.attempts + 1,
                            # Strictly increasing per job; safe to compute here because the
                            # UPDATE only applies if the token is still the one just read.
                            "fencing_token": snapshot.fencing_token + 1,
                            "lease_expires_at": now + lease_seconds,
                            "heartbeat_at": now,
                            "started_at": now,
                            "finished_at": None,
                            "not_before": None,
                        })  # fmt: skip
        job = job_from_row(row)
        return Claim(job=job, token=job.fencing_token)

    def heartbeat(self, job_id: int, token: int, lease_seconds: float) -> bool:
        """Extend the lease; False when this token no longer owns the job (reaped, re-claimed, cancelled)."""
        now = self._clock()
        params = {
            "lease_expires_at": now + lease_seconds,
            "heartbeat_at": now,
            "updated_at": now,
            "expected_id": job_id,
            "expected_token": token,
        }
        with write_transaction(self.engine) as connection:
            return connection.execute(_HEARTBEAT, params).rowcount == 1

    def publish_and_finish(
        self, job_id: int, token: int, publish: Callable[[], None], result: Mapping[str, Any]
    ) -> None:
        """Call ``publish`` and mark the job done, both under the write lock and only if ``token`` owns it.

        While the lock is held no reaper or claimer can take the job, so a worker that lost its lease
        can never publish beside its replacement. If ``publish`` raises, nothing is written.
        """
        with write_transaction(self.engine) as connection:
            snapshot = owned_snapshot(connection, job_id, token)
            publish()
            now = self._clock()
            apply(
                connection,
                snapshot,
                JobState.DONE,
                event=Event.FINISHED,
                now=now,
                values={
                    **_NOT_RUNNING,
                    "result": to_json(result),
                    "finished_at": now,
                    "last_error": None,
                },
            )

    def fail(self, job_id: int, token: int, error: str, *, permanent: bool) -> JobState:
        """Record a failed attempt: retry after backoff, or dead when permanent or out of attempts."""
        now = self._clock()
        message = one_line(error)
        with write_transaction(self.engine) as connection:
            snapshot = owned_snapshot(connection, job_id, token)
            gives_up = permanent or snapshot.attempts >= snapshot.max_attempts
            target = JobState.DEAD if gives_up else JobState.FAILED
            not_before = None if gives_up else now + self._backoff.delay(snapshot.attempts)
            apply(
                connection,
                snapshot,
                target,
                event=Event.GAVE_UP if gives_up else Event.FAILED,
                now=now,
                message=message,
                values={
                    **_NOT_RUNNING,
                    "last_error": message,
                    "not_before": not_before,
                    "finished_at": now if gives_up else None,
                },
            )
        return target

    def release(self, job_id: int, token: int, reason: str) -> None:
        """Give the job back unfinished (graceful shutdown): queued again, this attempt not counted."""
        self._leave_running(job_id, token, JobState.QUEUED, Event.RELEASED, reason, not_before=None)

    def hold(self, job_id: int, token: int, reason: str, until: float) -> None:
        """Park the job as waiting until ``until`` (e.g. the disk guard); not counted as an attempt.

        The reason is also the job's ``last_error``, which is what `ckptd status` shows for a waiting job.
        """
        self._leave_running(
            job_id, token, JobState.WAITING, Event.HELD, reason, not_before=until, error=one_line(reason)
        )

    def _leave_running(
        self,
        job_id: int,
        token: int,
        target: JobState,
        event: Event,
        reason: str,
        *,
        not_before: float | None,
        error: str | None = None,
    ) -> None:
        now = self._clock()
        extra = {} if error is None else {"last_error": error}
        with write_transaction(self.engine) as connection:
            snapshot = owned_snapshot(connection, job_id, token)
            apply(
                connection,
                snapshot,
                target,
                event=event,
                now=now,
                message=one_line(reason),
                values={
                    **_NOT_RUNNING,
                    "worker_id": None,
                    "not_before": not_before,
                    "attempts": snapshot.attempts - 1,
                    **extra,
                },
            )

    # -- supervisor --------------------------------------------------------------------------------

    def reap(self) -> list[int]:
        """Running jobs whose lease has expired: back to queued, or dead once out of attempts."""
        now = self._clock()
        reaped: list[int] = []
        with write_transaction(self.engine) as connection:
            query = _EXPIRED_LEASES_LOCKING if connection.dialect.name == POSTGRESQL else _EXPIRED_LEASES
            for row in connection.execute(query, {"now": now}).mappings().all():
                snapshot = Snapshot.from_row(row)
                expiries = queries.count_events(connection, snapshot.job_id, Event.LEASE_EXPIRED) + 1
                message = f"lease expired {expiries} times (worker died?)"
                gives_up = snapshot.attempts >= snapshot.max_attempts
                values: dict[str, Any] = {**_NOT_RUNNING, "worker_id": None, "last_error": message}
                if gives_up:
                    values["finished_at"] = now
                target = JobState.DEAD if gives_up else JobState.QUEUED
                apply(connection, snapshot, target, event=Event.LEASE_EXPIRED, now=now,
                      message=message, values=values)  # fmt: skip
                reaped.append(snapshot.job_id)
        return reaped

    # -- operators ---------------------------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        """Run a dead, failed, cancelled or done job again from scratch (attempts reset)."""
        values = {
            "attempts": 0,
            "not_before": None,
            "last_error": None,
            "finished_at": None,
            "worker_id": None,
        }
        return self._operator_move(job_id, JobState.QUEUED, Event.RETRIED, values, only_from=RETRYABLE_STATES)

    def cancel(self, job_id: int) -> Job:
        """Stop a queued, failed, waiting or running job; a worker running it sees its heartbeat fail."""
        return self._operator_move(
            job_id, JobState.CANCELLED, Event.CANCELLED, {**_NOT_RUNNING, "not_before": None}
        )

    def _operator_move(
        self,
        job_id: int,
        target: JobState,
        event: Event,
        values: dict[str, Any],
        *,
        only_from: frozenset[JobState] | None = None,
    ) -> Job:
        now = self._clock()
        with write_transaction(self.engine) as connection:
            snapshot = read_snapshot(connection, job_id)
            if only_from is not None and snapshot.state not in only_from:
                allowed = ", ".join(sorted(only_from))
                raise InvalidTransitionError(
                    f"job {job_id} is {snapshot.state}; only {allowed} jobs can be {event}"
                )
            if target in TERMINAL_STATES:
                values = {**values, "finished_at": now}
            row = apply(connection, snapshot, target, event=event, now=now, values=values)
        return job_from_row(row)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with read_transaction(self.engine) as connection:
            return queries.get_job(connection, job_id)

    def record_hook(self, job_id: int, hook: Mapping[str, Any]) -> None:
        """Keep a post-conversion hook's outcome in the job's result; the conversion stays done."""
        now = self._clock()
        with write_transaction(self.engine) as connection:
            job = queries.get_job(connection, job_id)
            if job is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            result = {**(job.result or {}), "hook": dict(hook)}
            connection.execute(
                update(jobs).where(jobs.c.id == job_id).values(result=to_json(result), updated_at=now)
            )
            ok = bool(hook.get("ok"))
            record_event(
                connection,
                job_id=job_id,
                event=Event.HOOK_DONE if ok else Event.HOOK_FAILED,
                now=now,
                from_state=job.state,
                to_state=job.state,
                message=None if ok else one_line(str(hook.get("summary", "hook failed"))),
            )

    def require(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise JobNotFoundError(f"job {job_id} does not exist; `ckptd status` lists the jobs")
        return job

    def list_jobs(
        self,
        states: Iterable[JobState | str] | None = None,
        experiment: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        with read_transaction(self.engine) as connection:
            return queries.list_jobs(connection, states, experiment, limit)

    def events(self, job_id: int) -> list[JobEvent]:
        with read_transaction(self.engine) as connection:
            return queries.list_events(connection, job_id)

    def counts(self) -> dict[str, int]:
        with read_transaction(self.engine) as connection:
            return queries.count_by_state(connection)
