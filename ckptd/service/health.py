"""``ckptd health``: DB reachable, watch roots mounted, the daemon's main loop ticked recently."""

from __future__ import annotations

import time
from pathlib import Path

from ckptd.config import Config

SUPERVISOR_PREFIX = "supervisor-"


def check_health(config: Config, max_age: float, now: float | None = None) -> list[str]:
    """Problems found, one line each; empty when healthy."""
    from ckptd.queue.engine import make_engine
    from ckptd.queue.repository import JobRepository

    now = time.time() if now is None else now
    problems = [f"watch root {w.root}: missing or not mounted" for w in config.watch if not w.root.is_dir()]
    url = config.database.url
    missing = _missing_sqlite_file(url)
    if missing is not None:  # connecting would create an empty file (and its directory) as a side effect
        return [*problems, f"database {url}: {missing} does not exist (has the daemon ever run?)"]
    try:
        engine = make_engine(url)
        workers = JobRepository(engine).list_workers()
        engine.dispose()
    except Exception as exc:  # any driver error means unreachable
        return [*problems, f"database {url}: unreachable ({_one_line(exc)})"]
    ticks = [w.heartbeat_at for w in workers if w.id.startswith(SUPERVISOR_PREFIX) and w.stopped_at is None]
    if not ticks:
        problems.append("daemon: no running ckptd supervisor has registered in the database")
    elif now - max(ticks) > max_age:
        problems.append(f"daemon: main loop last ticked {now - max(ticks):.0f}s ago (limit {max_age:.0f}s)")
    return problems


def _missing_sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database).expanduser()
    return None if database.startswith("file:") or path.exists() else path


def _one_line(exc: Exception) -> str:
    """The driver's own message (SQLAlchemy appends the SQL and a help link on further lines)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"
