"""Rendering for the CLI: the status table (rich) and the JSON schema of design.md §4."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ckptd.queue.records import Job

STATE_STYLES = {
    "done": "green",
    "running": "cyan",
    "queued": "white",
    "waiting": "yellow",
    "failed": "yellow",
    "dead": "red",
    "cancelled": "dim",
}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "experiment": job.experiment,
        "step": job.step,
        "format": job.format,
        "state": str(job.state),
        "attempts": job.attempts,
        "source": job.source,
        "output": job.output,
        "error": job.last_error,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "hook": _hook(job),
    }


def _hook(job: Job) -> dict[str, Any] | None:
    """The post-conversion hook's outcome (an addition to design.md §4's schema), or None."""
    hook = (job.result or {}).get("hook")
    if not isinstance(hook, dict):
        return None
    return {key: hook.get(key) for key in ("ok", "summary", "exit_code", "timed_out", "output_tail")}


def status_json(jobs: Iterable[Job]) -> dict[str, Any]:
    return {"jobs": [job_json(job) for job in jobs]}


def _duration(job: Job) -> str:
    """Conversion time: so far while running, final once finished; blank while queued or held."""
    if job.started_at is None:
        return ""
    if job.finished_at is not None:
        end = job.finished_at
    elif str(job.state) == "running":
        end = datetime.now(UTC).timestamp()
    else:
        return ""
    return f"{max(0.0, end - job.started_at):.1f}s"


def status_table(jobs: list[Job], counts: dict[str, int]) -> Table:
    summary = "  ".join(f"{state} {n}" for state, n in sorted(counts.items()) if n)
    table = Table(title=f"ckptd jobs ({summary or 'none'})", title_justify="left")
    for column in ("id", "experiment", "step", "fmt", "state", "try", "time", "output / error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        state = str(job.state)
        detail = job.last_error if state in ("failed", "dead", "waiting") and job.last_error else job.output
        hook = _hook(job)
        if hook is not None and not hook["ok"]:
            detail = f"{detail}  [red]({hook['summary']})[/]"
        table.add_row(
            str(job.id),
            job.experiment,
            str(job.step),
            job.format,
            f"[{STATE_STYLES.get(state, 'white')}]{state}[/]",
            f"{job.attempts}/{job.max_attempts}",
            _duration(job),
            detail,
        )
    return table


def print_table(jobs: list[Job], counts: dict[str, int], console: Console | None = None) -> None:
    (console or Console()).print(status_table(jobs, counts))
