"""The SQL that differs between SQLite and PostgreSQL, each branch spelled out.

SQLite (one host): every write transaction starts with ``BEGIN IMMEDIATE`` (see ``engine``), so the
whole database is locked for the claim's select-then-update and no row lock exists or is needed.
PostgreSQL (workers on many hosts): claimers run concurrently, so the candidate row is locked with
``FOR UPDATE SKIP LOCKED``: each claimer takes a different job instead of queueing behind one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Select, bindparam, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ckptd.queue.models import LIVE_JOBS_SQL, jobs
from ckptd.queue.states import JobState

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

SNAPSHOT_COLUMNS = (
    jobs.c.id,
    jobs.c.state,
    jobs.c.fencing_token,
    jobs.c.worker_id,
    jobs.c.attempts,
    jobs.c.max_attempts,
)

# Built once; executed with {"now": <unix seconds>}. Newest step first, then the oldest job.
_CLAIM_CANDIDATE = (
    select(*SNAPSHOT_COLUMNS)
    .where(
        text(LIVE_JOBS_SQL),  # lets SQLite walk the partial index in claim order
        # Failed and waiting jobs always carry a not_before; queued ones are due at once.
        or_(jobs.c.state == JobState.QUEUED, jobs.c.not_before <= bindparam("now")),
    )
    .order_by(jobs.c.priority.desc(), jobs.c.step.desc(), jobs.c.id)
    .limit(1)
)
_CLAIM_CANDIDATE_LOCKING = _CLAIM_CANDIDATE.with_for_update(skip_locked=True)


def claim_candidate(dialect_name: str) -> Select[Any]:
    """The next due job: queued, or failed/waiting whose ``not_before`` <= :now."""
    if dialect_name == POSTGRESQL:
        return _CLAIM_CANDIDATE_LOCKING
    return _CLAIM_CANDIDATE


def _insert_module(dialect_name: str) -> Any:
    if dialect_name == POSTGRESQL:
        return postgresql
    if dialect_name == SQLITE:
        return sqlite
    raise NotImplementedError(f"ckptd's queue supports sqlite and postgresql, not {dialect_name}")


def insert_unless_exists(dialect_name: str, values: Mapping[str, Any], unique: Sequence[str]) -> Insert:
    """INSERT INTO jobs that silently does nothing when a row with the same ``unique`` columns exists."""
    stmt = _insert_module(dialect_name).insert(jobs).values(**values)
    result: Insert = stmt.on_conflict_do_nothing(index_elements=list(unique))
    return result


def upsert(dialect_name: str, table: Any, values: Mapping[str, Any], key: str) -> Insert:
    """INSERT, or UPDATE every other column of the row whose ``key`` already exists."""
    stmt = _insert_module(dialect_name).insert(table).values(**values)
    changes = {name: stmt.excluded[name] for name in values if name != key}
    result: Insert = stmt.on_conflict_do_update(index_elements=[key], set_=changes)
    return result
