"""Helpers shared by the queue integration tests and the processes they spawn."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from ckptd.queue.engine import make_engine, upgrade
from ckptd.queue.records import Job
from ckptd.queue.repository import JobRepository

LEASE_S = 30.0


class FakeClock:
    """A settable clock, so lease expiry and backoff need no sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_repo(url: str, clock: Any = time.time, **kwargs: Any) -> JobRepository:
    engine = make_engine(url)
    upgrade(engine)
    return JobRepository(engine, clock, **kwargs)


def new_repo(tmp_path: Path, clock: Any = None, seed: int = 0, **kwargs: Any) -> JobRepository:
    url = db_url(tmp_path / "state" / "ckptd.db")
    return open_repo(url, clock or FakeClock(), rng=random.Random(seed), **kwargs)


def enqueue_step(repo: JobRepository, step: int, experiment: str = "exp", **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "source": f"/runs/{experiment}/checkpoints/global_step_{step}",
        "output": f"/hf/{experiment}/global_step_{step}",
        "experiment": experiment,
        "step": step,
        "format": "fsdp_dcp",
        "watch_root": "/runs",
        "options": {"dtype": "bf16", "lora": "merge"},
        "max_attempts": 3,
    }
    fields.update(overrides)
    job, _created = repo.enqueue(**fields)
    return job
