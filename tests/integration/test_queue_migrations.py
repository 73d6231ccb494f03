from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from ckptd.queue.dialect import claim_candidate
from ckptd.queue.engine import current_revision, make_engine, upgrade
from ckptd.queue.errors import SchemaError
from ckptd.queue.models import Base
from ckptd.queue.schema import head_revision


def test_upgrade_head_on_an_empty_file_yields_exactly_the_models_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'ckptd.db'}")
    assert current_revision(engine) is None

    upgrade(engine)

    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diffs == []


def test_partial_claim_index_and_foreign_keys_exist(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ckptd.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        index_sql = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_claim_order'")
        ).scalar_one()
        foreign_keys = connection.execute(text("PRAGMA foreign_keys")).scalar_one()
        journal_mode = connection.execute(text("PRAGMA journal_mode")).scalar_one()
    assert "WHERE state IN ('queued', 'failed', 'waiting')" in index_sql
    assert foreign_keys == 1
    assert journal_mode == "wal"


def test_second_upgrade_is_a_no_op(tmp_path: Path) -> None:
    db = tmp_path / "ckptd.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    schema_before = _schema(db)

    upgrade(engine)
    upgrade(make_engine(f"sqlite:///{db}"))

    assert _schema(db) == schema_before
    assert current_revision(engine) == head_revision()


def test_refuses_a_database_newer_than_the_code(tmp_path: Path) -> None:
    db = tmp_path / "ckptd.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))

    with pytest.raises(SchemaError) as excinfo:
        upgrade(engine)
    message = str(excinfo.value)
    assert "from_the_future" in message
    assert "newer than this ckptd" in message
    assert "\n" not in message


def test_migrated_sqlite_ddl_matches_create_all_including_partial_indexes(tmp_path: Path) -> None:
    # compare_metadata ignores dialect options such as sqlite_where; the DDL text does not.
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    upgrade(make_engine(f"sqlite:///{migrated}"))
    Base.metadata.create_all(make_engine(f"sqlite:///{created}"))

    assert _schema(migrated) == _schema(created)


def test_claim_query_walks_the_partial_index(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ckptd.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        query = claim_candidate("sqlite").params(now=0.0)
        sql = str(query.compile(connection, compile_kwargs={"literal_binds": True}))
        plan = " ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "USING INDEX ix_jobs_claim_order" in plan


def test_migrations_are_found_in_an_installed_layout(tmp_path: Path) -> None:
    # What a wheel holds: the package, with migrations/ mapped to ckptd/_migrations (pyproject package-dir).
    repo = Path(__file__).resolve().parents[2]
    site = tmp_path / "site-packages"
    shutil.copytree(repo / "ckptd", site / "ckptd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        repo / "migrations", site / "ckptd" / "_migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    script = (
        "import sys, ckptd.queue.engine as e, ckptd.queue.schema as s;"
        f"engine = e.make_engine('sqlite:///{tmp_path / 'db.sqlite'}'); e.upgrade(engine);"
        "print(s.migrations_dir(), e.current_revision(engine))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.split() == [str(site / "ckptd" / "_migrations"), head_revision()]


def _schema(db: Path) -> list[tuple[str, str]]:
    """Every table and index definition, leaving out alembic's own bookkeeping table."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    return [(name, sql) for name, sql in rows if "alembic_version" not in name]
