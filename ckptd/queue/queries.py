"""Read-only queries over jobs, their events and workers."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, func, select

from ckptd.queue.models import job_events, jobs, workers
from ckptd.queue.records import Job, JobEvent, Worker, event_from_row, job_from_row, worker_from_row
from ckptd.queue.states import JobState


def get_job(connection: Connection, job_id: int) -> Job | None:
    row = connection.execute(select(*jobs.c).where(jobs.c.id == job_id)).mappings().first()
    return job_from_row(row) if row is not None else None


def get_job_by_target(connection: Connection, source: str, output: str) -> Job | None:
    stmt = select(*jobs.c).where(jobs.c.source == source, jobs.c.output == output)
    row = connection.execute(stmt).mappings().first()
    return job_from_row(row) if row is not None else None


def list_jobs(
    connection: Connection,
    states: Iterable[JobState | str] | None = None,
    experiment: str | None = None,
    limit: int | None = None,
) -> list[Job]:
    stmt = select(*jobs.c).order_by(jobs.c.id)
    if states is not None:
        stmt = stmt.where(jobs.c.state.in_(sorted(JobState(state) for state in states)))
    if experiment is not None:
        stmt = stmt.where(jobs.c.experiment == experiment)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [job_from_row(row) for row in connection.execute(stmt).mappings()]


def list_events(connection: Connection, job_id: int) -> list[JobEvent]:
    stmt = select(*job_events.c).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
    return [event_from_row(row) for row in connection.execute(stmt).mappings()]


def count_events(connection: Connection, job_id: int, event: str) -> int:
    stmt = select(func.count()).where(job_events.c.job_id == job_id, job_events.c.event == event)
    return int(connection.execute(stmt).scalar_one())


def count_by_state(connection: Connection) -> dict[str, int]:
    """Every state present, zero when no job is in it."""
    counts = dict.fromkeys((str(state) for state in JobState), 0)
    stmt = select(jobs.c.state, func.count()).group_by(jobs.c.state)
    for state, count in connection.execute(stmt):
        counts[str(state)] = int(count)
    return counts


def list_workers(connection: Connection) -> list[Worker]:
    stmt = select(*workers.c).order_by(workers.c.started_at, workers.c.id)
    return [worker_from_row(row) for row in connection.execute(stmt).mappings()]
