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


# -- bodies of spawned processes (module-level so ``spawn`` can import them) -------------------------


def claim_until_empty(url: str, worker_id: str, report: str, publish_marker: str) -> None:
    """Claim and finish jobs until none is due; write what was published and any error to ``report``."""
    import json
    import os

    published: list[int] = []
    errors: list[str] = []
    repo = JobRepository(make_engine(url))

    def publish(job_id: int) -> None:
        # O_EXCL fails if another process is publishing now: publishes must never overlap.
        fd = os.open(publish_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        published.append(job_id)
        Path(publish_marker).unlink()

    try:
        while (claim := repo.claim(worker_id, LEASE_S)) is not None:
            job_id = claim.job.id
            repo.publish_and_finish(
                job_id, claim.token, lambda job_id=job_id: publish(job_id), {"by": worker_id}
            )
    except Exception as error:  # reported to the parent test, which fails on it
        errors.append(repr(error))
    Path(report).write_text(json.dumps({"published": published, "errors": errors}))


def claim_and_hang(url: str, ready: str, lease_seconds: float, in_publish: bool) -> None:
    """Claim one job, say so in ``ready``, then hang (optionally inside publish, holding the write lock)."""
    repo = JobRepository(make_engine(url))
    claim = repo.claim("doomed", lease_seconds)
    assert claim is not None

    def announce_and_hang() -> None:
        Path(ready).write_text(str(claim.token))
        time.sleep(120)  # killed by the test long before; bounded in case the test itself dies

    if in_publish:
        repo.publish_and_finish(claim.job.id, claim.token, announce_and_hang, {})
    announce_and_hang()
