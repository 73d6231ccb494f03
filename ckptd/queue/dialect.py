"""The SQL that differs between SQLite and PostgreSQL, each branch spelled out.

SQLite (one host): every write transaction starts with ``BEGIN IMMEDIATE`` (see ``engine``), so the
whole database is locked for the claim's select-then-update and no row lock exists or is needed.
PostgreSQL (workers on many hosts): claimers run concurrently, so the candidate row is locked with
``FOR UPDATE SKIP LOCKED``: each claimer takes a different job instead of queueing behind one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, RowMapping, Select, Update, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from ckptd.queue.models import jobs
from ckptd.queue.states import CLAIMABLE_STATES, DEFERRED_STATES, JobState

POSTGRESQL = "postgresql"
SQLITE = "sqlite"


def claim_candidate(dialect_name: str, now: float) -> Select[Any]:
    """The next job to run: queued, or failed/waiting whose ``not_before`` has passed; newest step first."""
    due = or_(
        jobs.c.state == JobState.QUEUED,
        and_(jobs.c.state.in_(sorted(DEFERRED_STATES)), jobs.c.not_before <= now),
    )
    stmt = (
        select(jobs.c.id, jobs.c.state, jobs.c.fencing_token)
        # Redundant with ``due`` but stated on its own so the planner can use the partial index.
        .where(jobs.c.state.in_(sorted(CLAIMABLE_STATES)), due)
        .order_by(jobs.c.priority.desc(), jobs.c.step.desc(), jobs.c.id)
        .limit(1)
    )
    if dialect_name == POSTGRESQL:
        return stmt.with_for_update(skip_locked=True)
    return stmt


def insert_unless_exists(dialect_name: str, values: Mapping[str, Any], unique: Sequence[str]) -> Insert:
    """INSERT that silently does nothing when a row with the same ``unique`` columns exists."""
    if dialect_name == POSTGRESQL:
        return postgresql.insert(jobs).values(**values).on_conflict_do_nothing(index_elements=list(unique))
    if dialect_name == SQLITE:
        return sqlite.insert(jobs).values(**values).on_conflict_do_nothing(index_elements=list(unique))
    raise NotImplementedError(f"ckptd's queue supports sqlite and postgresql, not {dialect_name}")


def upsert(dialect_name: str, table: Any, values: Mapping[str, Any], key: str) -> Insert:
    """INSERT, or UPDATE every other column of the row whose ``key`` already exists."""
    module: Any
    if dialect_name == POSTGRESQL:
        module = postgresql
    elif dialect_name == SQLITE:
        module = sqlite
    else:
        raise NotImplementedError(f"ckptd's queue supports sqlite and postgresql, not {dialect_name}")
    stmt = module.insert(table).values(**values)
    changes = {name: stmt.excluded[name] for name in values if name != key}
    result: Insert = stmt.on_conflict_do_update(index_elements=[key], set_=changes)
    return result


def update_one_job(connection: Connection, stmt: Update, job_id: int) -> RowMapping | None:
    """Run a conditional UPDATE of one job; the new row if it matched, else None."""
    if connection.dialect.update_returning:  # SQLite >= 3.35, PostgreSQL
        return connection.execute(stmt.returning(*jobs.c)).mappings().first()
    # Older SQLite: the write lock is held since BEGIN IMMEDIATE, so re-reading the row is safe.
    if connection.execute(stmt).rowcount != 1:
        return None
    return connection.execute(select(*jobs.c).where(jobs.c.id == job_id)).mappings().one()
