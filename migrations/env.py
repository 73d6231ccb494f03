"""Alembic environment for ckptd. ``ckptd.queue.schema.upgrade`` passes its open connection in
``config.attributes["connection"]``; the ``alembic`` CLI uses ``sqlalchemy.url`` from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ckptd.queue.engine import make_engine
from ckptd.queue.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Batch mode lets future revisions ALTER tables on SQLite (copy-and-move) and is plain ALTER elsewhere.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url in alembic.ini (or use `ckptd db upgrade`)")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("ckptd migrations run online only")
run_migrations_online()
