"""The PostgreSQL branch is not run here (no server), but its SQL must say what the design promises."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite

from ckptd.queue.dialect import claim_candidate, insert_unless_exists, upsert
from ckptd.queue.models import workers


def _sql(statement: object, dialect: object) -> str:
    return " ".join(str(statement.compile(dialect=dialect)).split())  # type: ignore[attr-defined]


def test_postgresql_claim_locks_the_candidate_and_skips_locked_rows() -> None:
    sql = _sql(claim_candidate("postgresql"), postgresql.dialect())
    assert sql.endswith("FOR UPDATE SKIP LOCKED")
    assert "ORDER BY jobs.priority DESC, jobs.step DESC, jobs.id" in sql


def test_sqlite_claim_takes_no_row_lock_and_repeats_the_partial_index_predicate() -> None:
    sql = _sql(claim_candidate("sqlite"), sqlite.dialect())
    assert "FOR UPDATE" not in sql
    assert "WHERE state IN ('queued', 'failed', 'waiting') AND" in sql


def test_enqueue_and_worker_upsert_use_on_conflict_on_both_databases() -> None:
    values = {"source": "s", "output": "o"}
    for name, dialect in (("postgresql", postgresql.dialect()), ("sqlite", sqlite.dialect())):
        assert "ON CONFLICT (source, output) DO NOTHING" in _sql(
            insert_unless_exists(name, values, ("source", "output")), dialect
        )
        upsert_sql = _sql(upsert(name, workers, {"id": "w", "pid": 1}, "id"), dialect)
        assert "ON CONFLICT (id) DO UPDATE SET pid = excluded.pid" in upsert_sql
