"""Immutable values handed to callers; ORM objects and sessions never leave the queue package."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from ckptd.queue.states import JobState

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Job:
    id: int
    source: str
    output: str
    experiment: str
    step: int
    format: str
    watch_root: str
    options: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    not_before: float | None
    fencing_token: int
    worker_id: str | None
    lease_expires_at: float | None
    heartbeat_at: float | None
    last_error: str | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float


@dataclass(frozen=True)
class Claim:
    """A running job and the fencing token every later write for it must present."""

    job: Job
    token: int


@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: int
    at: float
    event: str
    from_state: JobState | None
    to_state: JobState | None
    worker_id: str | None
    message: str | None


@dataclass(frozen=True)
class Worker:
    id: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None


_JOB_TIMES = (
    "not_before",
    "lease_expires_at",
    "heartbeat_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)


def _as_float(value: float | None) -> float | None:
    # SQLite's RETURNING can hand back an integral REAL as an int; callers get floats either way.
    return float(value) if value is not None else None


def job_from_row(row: RowMapping) -> Job:
    values = dict(row)
    for key in _JOB_TIMES:
        values[key] = _as_float(values[key])
    values["state"] = JobState(values["state"])
    values["options"] = json.loads(values["options"] or "{}")
    values["result"] = json.loads(values["result"]) if values["result"] is not None else None
    return Job(**values)


def event_from_row(row: RowMapping) -> JobEvent:
    values = dict(row)
    for key in ("from_state", "to_state"):
        values[key] = JobState(values[key]) if values[key] is not None else None
    return JobEvent(**values)


def worker_from_row(row: RowMapping) -> Worker:
    return Worker(**dict(row))


def to_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def one_line(error: str) -> str:
    """Errors are kept as one line (status tables, log fields), cut to a bounded length."""
    line = " ".join(error.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
