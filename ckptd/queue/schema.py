"""Schema versions: alembic ``upgrade head`` run from code, and the refusal to touch a newer database."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from ckptd.queue.errors import SchemaError

# Installed wheels carry migrations/ as the package ``ckptd._migrations`` (a package-dir mapping in
# pyproject.toml); a source checkout finds it at the repository root.
_INSTALLED_PACKAGE = "ckptd._migrations"
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "migrations"


def migrations_dir() -> Path:
    spec = importlib.util.find_spec(_INSTALLED_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if (_SOURCE_DIR / "env.py").is_file():
        return _SOURCE_DIR
    raise SchemaError(
        f"alembic migrations not found (looked for {_INSTALLED_PACKAGE} and {_SOURCE_DIR}); reinstall ckptd"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError(f"{migrations_dir()}: no alembic revisions found; reinstall ckptd")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from ckptd.queue.engine import read_transaction  # engine re-exports this module's API

    with read_transaction(engine) as connection:
        return _revision_of(connection)


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_not_newer(connection: Connection) -> None:
    """Refuse a database written by a newer ckptd: its schema may mean things this code does not know."""
    revision = _revision_of(connection)
    if revision is None:
        return
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        url = connection.engine.url.render_as_string(hide_password=True)
        raise SchemaError(
            f"{url}: database schema revision {revision} is newer than this ckptd knows; upgrade ckptd"
        )


def upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` in one write transaction; a no-op when already at head."""
    with engine.begin() as connection:
        check_not_newer(connection)
        if _revision_of(connection) != head_revision():
            command.upgrade(alembic_config(connection), "head")
