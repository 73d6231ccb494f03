"""The one way a job changes state: checked against the table, conditional on what was read, logged.

Every UPDATE that changes ``jobs.state`` is made here, ``WHERE state = <read> AND fencing_token =
<read>``, and writes a ``job_events`` row in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from ckptd.errors import LeaseLostError
from ckptd.queue.dialect import update_one_job
from ckptd.queue.errors import JobNotFoundError
from ckptd.queue.models import job_events, jobs
from ckptd.queue.states import JobState, check_transition


@dataclass(frozen=True)
class Snapshot:
    """What a transition is conditional on: the job's state and token as this transaction read them."""

    job_id: int
    state: JobState
    fencing_token: int
    worker_id: str | None = None


def _snapshot_select(job_id: int) -> Any:
    return select(jobs.c.id, jobs.c.state, jobs.c.fencing_token, jobs.c.worker_id).where(jobs.c.id == job_id)


def _to_snapshot(row: RowMapping) -> Snapshot:
    return Snapshot(row["id"], JobState(row["state"]), row["fencing_token"], row["worker_id"])


def read_snapshot(connection: Connection, job_id: int) -> Snapshot:
    row = connection.execute(_snapshot_select(job_id)).mappings().first()
    if row is None:
        raise JobNotFoundError(f"job {job_id} does not exist; `ckptd status` lists the jobs")
    return _to_snapshot(row)


def owned_snapshot(connection: Connection, job_id: int, token: int) -> Snapshot:
    """The running job that ``token`` still owns; :class:`LeaseLostError` if it was taken away."""
    row = connection.execute(_snapshot_select(job_id)).mappings().first()
    if row is None:
        raise LeaseLostError(f"job {job_id}: lease lost (the job no longer exists)")
    snapshot = _to_snapshot(row)
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
) -> RowMapping | None:
    """Move the job from ``snapshot.state`` to ``target``; None if it changed since it was read."""
    check_transition(snapshot.state, target)
    stmt = (
        update(jobs)
        .where(
            jobs.c.id == snapshot.job_id,
            jobs.c.state == snapshot.state,
            jobs.c.fencing_token == snapshot.fencing_token,
        )
        .values(state=target, updated_at=now, **(values or {}))
    )
    row = update_one_job(connection, stmt, snapshot.job_id)
    if row is not None:
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
        insert(job_events).values(
            job_id=job_id,
            at=now,
            event=event,
            from_state=from_state,
            to_state=to_state,
            worker_id=worker_id,
            message=message,
        )
    )
