"""The one way a job changes state: checked against the table, conditional on what was read, logged.

Every UPDATE that changes ``jobs.state`` is made here, ``WHERE state = <read> AND fencing_token =
<read>``, and writes a ``job_events`` row in the same transaction. Statements are built once and
executed with parameters: the claim/finish cycle is the queue's hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, insert, select, update

from ckptd.errors import LeaseLostError
from ckptd.queue.dialect import POSTGRESQL, SNAPSHOT_COLUMNS
from ckptd.queue.errors import ConcurrentUpdateError, JobNotFoundError
from ckptd.queue.models import job_events, jobs
from ckptd.queue.states import JobState, check_transition

_SNAPSHOT_BY_ID = select(*SNAPSHOT_COLUMNS).where(jobs.c.id == bindparam("job_id"))
_SNAPSHOT_BY_ID_LOCKING = _SNAPSHOT_BY_ID.with_for_update()
_JOB_BY_ID = select(*jobs.c).where(jobs.c.id == bindparam("job_id"))
# SET columns come from the execute() parameters; the expected_* ones only guard the WHERE.
_TRANSITION = update(jobs).where(
    jobs.c.id == bindparam("expected_id"),
    jobs.c.state == bindparam("expected_state"),
    jobs.c.fencing_token == bindparam("expected_token"),
)
_TRANSITION_RETURNING = _TRANSITION.returning(*jobs.c)
_INSERT_EVENT = insert(job_events)


@dataclass(frozen=True)
class Snapshot:
    """A job as this transaction read it; a transition only applies if state and token are unchanged."""

    job_id: int
    state: JobState
    fencing_token: int
    worker_id: str | None
    attempts: int
    max_attempts: int

    @classmethod
    def from_row(cls, row: RowMapping) -> Snapshot:
        return cls(
            job_id=row["id"],
            state=JobState(row["state"]),
            fencing_token=row["fencing_token"],
            worker_id=row["worker_id"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
        )


def _select_snapshot(connection: Connection, job_id: int) -> RowMapping | None:
    # PostgreSQL: lock the row until commit, so nothing changes it between this read and the UPDATE
    # (nor during publish_and_finish's rename). SQLite: BEGIN IMMEDIATE already locked the database.
    query = _SNAPSHOT_BY_ID_LOCKING if connection.dialect.name == POSTGRESQL else _SNAPSHOT_BY_ID
    return connection.execute(query, {"job_id": job_id}).mappings().first()


def read_snapshot(connection: Connection, job_id: int) -> Snapshot:
    row = _select_snapshot(connection, job_id)
    if row is None:
        raise JobNotFoundError(f"job {job_id} does not exist; `ckptd status` lists the jobs")
    return Snapshot.from_row(row)


def owned_snapshot(connection: Connection, job_id: int, token: int) -> Snapshot:
    """The running job that ``token`` still owns; :class:`LeaseLostError` if it was taken away."""
    row = _select_snapshot(connection, job_id)
    if row is None:
        raise LeaseLostError(f"job {job_id}: lease lost (the job no longer exists)")
    snapshot = Snapshot.from_row(row)
    if snapshot.state != JobState.RUNNING or snapshot.fencing_token != token:
        raise LeaseLostError(
            f"job {job_id}: lease lost (token {token} is stale: job is {snapshot.state}"
            f" with token {snapshot.fencing_token}); stop and write nothing"
        )
    return snapshot


def apply(
    connection: Connection,
    snapshot: Snapshot,
    target: JobState,
    *,
    event: str,
    now: float,
    values: Mapping[str, Any] | None = None,
    worker_id: str | None = None,
    message: str | None = None,
) -> RowMapping:
    """Move the job from ``snapshot.state`` to ``target`` and log it; returns the updated row.

    Callers read ``snapshot`` in this transaction under a lock (SQLite's write lock, PostgreSQL's row
    lock), so the conditional UPDATE always matches; if it ever does not, nothing is written.
    """
    check_transition(snapshot.state, target)
    params = {
        **(values or {}),
        "state": target,
        "updated_at": now,
        "expected_id": snapshot.job_id,
        "expected_state": snapshot.state,
        "expected_token": snapshot.fencing_token,
    }
    row = _update_job(connection, params, snapshot.job_id)
    if row is None:
        raise ConcurrentUpdateError(
            f"job {snapshot.job_id} changed while this transaction held it ({snapshot.state} ->"
            f" {target} not applied); retry the operation"
        )
    record_event(
        connection,
        job_id=snapshot.job_id,
        event=event,
        now=now,
        from_state=snapshot.state,
        to_state=target,
        worker_id=worker_id if worker_id is not None else snapshot.worker_id,
        message=message,
    )
    return row


def _update_job(connection: Connection, params: Mapping[str, Any], job_id: int) -> RowMapping | None:
    if connection.dialect.update_returning:  # SQLite >= 3.35, PostgreSQL
        return connection.execute(_TRANSITION_RETURNING, params).mappings().first()
    # Older SQLite: the write lock has been held since BEGIN IMMEDIATE, so re-reading the row is safe.
    if connection.execute(_TRANSITION, params).rowcount != 1:
        return None
    return connection.execute(_JOB_BY_ID, {"job_id": job_id}).mappings().one()


def record_event(
    connection: Connection,
    *,
    job_id: int,
    event: str,
    now: float,
    from_state: JobState | None,
    to_state: JobState | None,
    worker_id: str | None = None,
    message: str | None = None,
) -> None:
    connection.execute(
        _INSERT_EVENT,
        {
            "job_id": job_id,
            "at": now,
            "event": event,
            "from_state": from_state,
            "to_state": to_state,
            "worker_id": worker_id,
            "message": message,
        },
    )
