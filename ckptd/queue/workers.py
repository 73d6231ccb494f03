"""The worker registry: which worker processes exist, their heartbeats, and when they stopped."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, update

from ckptd.queue import queries
from ckptd.queue.dialect import upsert
from ckptd.queue.engine import read_transaction, write_transaction
from ckptd.queue.models import workers
from ckptd.queue.records import Worker

Clock = Callable[[], float]


class WorkerRegistry:
    def __init__(self, engine: Engine, clock: Clock = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def register_worker(self, worker_id: str, pid: int, host: str) -> None:
        """Record a (re)started worker; a restarted one may reuse its id."""
        now = self._clock()
        values = {
            "id": worker_id,
            "pid": pid,
            "host": host,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        }
        with write_transaction(self.engine) as connection:
            connection.execute(upsert(connection.dialect.name, workers, values, "id"))

    def worker_heartbeat(self, worker_id: str) -> bool:
        """False when the worker was never registered."""
        return self._touch_worker(worker_id, heartbeat_at=self._clock())

    def worker_stopped(self, worker_id: str) -> bool:
        return self._touch_worker(worker_id, stopped_at=self._clock())

    def _touch_worker(self, worker_id: str, **values: float) -> bool:
        with write_transaction(self.engine) as connection:
            stmt = update(workers).where(workers.c.id == worker_id).values(**values)
            return connection.execute(stmt).rowcount == 1

    def list_workers(self) -> list[Worker]:
        with read_transaction(self.engine) as connection:
            return queries.list_workers(connection)
