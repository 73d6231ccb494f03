"""Engines and transactions: SQLite in WAL mode whose write transactions start with ``BEGIN IMMEDIATE``.

A deferred SQLite transaction that reads and then writes must upgrade its lock, and if another writer
got there first it fails with SQLITE_BUSY at once, ignoring ``busy_timeout`` (pitfalls.md 18). Taking
the write lock at ``BEGIN`` makes a contending claimer wait in the busy handler instead. Read-only
transactions (see :func:`read_transaction`) keep a plain deferred ``BEGIN``: in WAL they never block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from ckptd.queue.schema import current_revision, upgrade

__all__ = ["current_revision", "make_engine", "read_transaction", "upgrade", "write_transaction"]

DEFAULT_BUSY_TIMEOUT_S = 30.0
_READ_ONLY_OPTION = "ckptd_read_only"


def make_engine(url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets its parent dir created and the pragmas the queue relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_s})
    _install_sqlite_hooks(engine, busy_timeout_s)
    return engine


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite would otherwise emit its own deferred BEGIN; we emit ours in the "begin" hook.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the database write lock (SQLite) from its first statement; commits on exit."""
    with engine.begin() as connection:
        yield connection


@contextlib.contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads that never takes SQLite's write lock."""
    with engine.connect().execution_options(**{_READ_ONLY_OPTION: True}) as connection, connection.begin():
        yield connection
