"""A heartbeat thread that keeps one job's lease and notices when it is lost."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from ckptd.queue.repository import JobRepository

log = structlog.get_logger("ckptd.worker")


class LeaseKeeper:
    """Extends the lease every ``heartbeat_seconds``; ``lost`` is set once the job is no longer ours.

    A heartbeat refused by the fencing token (reaped and re-claimed, or cancelled) means lost at once.
    Heartbeats that fail for other reasons (DB busy) only count as lost once the lease has run out.
    """

    def __init__(
        self, repo: JobRepository, job_id: int, token: int, lease_seconds: float, heartbeat_seconds: float
    ) -> None:
        self._repo = repo
        self._job_id = job_id
        self._token = token
        self._lease_seconds = lease_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ckptd-lease-{job_id}", daemon=True)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                if not self._repo.heartbeat(self._job_id, self._token, self._lease_seconds):
                    log.warning("job.lease_lost", job_id=self._job_id, reason="fenced or cancelled")
                    self.lost.set()
                    return
                last_ok = time.monotonic()
            except Exception as exc:  # any DB error: keep trying until the lease would have expired
                log.warning("job.heartbeat_failed", job_id=self._job_id, error=str(exc))
                if time.monotonic() - last_ok > self._lease_seconds:
                    self.lost.set()
                    return

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
