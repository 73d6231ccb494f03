"""``ckptd health``: DB reachable, watch roots mounted, the daemon's main loop ticked recently."""

from __future__ import annotations

import time

from ckptd.config import Config

SUPERVISOR_PREFIX = "supervisor-"


def check_health(config: Config, max_age: float, now: float | None = None) -> list[str]:
    """Problems found, one line each; empty when healthy."""
    from ckptd.queue.engine import make_engine
    from ckptd.queue.repository import JobRepository

    now = time.time() if now is None else now
    problems = [f"watch root {w.root}: missing or not mounted" for w in config.watch if not w.root.is_dir()]
    try:
        engine = make_engine(config.database.url)
        workers = JobRepository(engine).list_workers()
        engine.dispose()
    except Exception as exc:  # any driver error means unreachable
        return [*problems, f"database {config.database.url}: unreachable ({type(exc).__name__}: {exc})"]
    ticks = [w.heartbeat_at for w in workers if w.id.startswith(SUPERVISOR_PREFIX) and w.stopped_at is None]
    if not ticks:
        problems.append("daemon: no running ckptd supervisor has registered in the database")
    elif now - max(ticks) > max_age:
        problems.append(f"daemon: main loop last ticked {now - max(ticks):.0f}s ago (limit {max_age:.0f}s)")
    return problems
