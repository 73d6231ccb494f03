"""Spawned worker processes, restarted by the supervisor when they die."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

from ckptd.config import Config

log = structlog.get_logger("ckptd.daemon")

# A worker that dies sooner than this after starting is crash-looping: back off before restarting.
_MIN_HEALTHY_SECONDS = 10.0
_MAX_RESTART_DELAY = 60.0


def worker_main(config: Config, worker_id: str) -> None:
    """Entry point of a spawned worker process: its own logging, engine and signal handling."""
    from ckptd.logging import configure_logging
    from ckptd.queue.engine import make_engine
    from ckptd.queue.repository import JobRepository
    from ckptd.worker.loop import Worker

    configure_logging(config.log.level, config.log.format, worker_id=worker_id)
    engine = make_engine(config.database.url)
    repo = JobRepository(
        engine, backoff_base_s=config.queue.backoff_base, backoff_cap_s=config.queue.backoff_cap
    )
    worker = Worker(repo, config, worker_id)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker.stop_requested", signal=signal.Signals(signum).name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run_forever()
    engine.dispose()


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    generation: int = 0
    restart_at: float = 0.0
    failures: int = 0


class WorkerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(config.workers.count)]
        self.restarts = 0

    def worker_id(self, slot: _Slot) -> str:
        return f"{socket.gethostname()}-{os.getpid()}-w{slot.index}.{slot.generation}"

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        worker_id = self.worker_id(slot)
        process = self._ctx.Process(
            target=worker_main, args=(self.config, worker_id), name=f"ckptd-worker-{slot.index}"
        )
        process.start()
        slot.process, slot.started_at = process, time.monotonic()
        log.info("worker.spawned", worker_id=worker_id, worker_pid=process.pid)

    def start(self) -> None:
        for slot in self._slots:
            self._spawn(slot)

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process is not None and s.process.pid is not None]

    def check(self) -> int:
        """Restart dead workers (with backoff when they crash-loop); return how many were restarted."""
        restarted = 0
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            if slot.restart_at == 0.0:
                healthy = now - slot.started_at >= _MIN_HEALTHY_SECONDS
                slot.failures = 0 if healthy else slot.failures + 1
                delay = min(_MAX_RESTART_DELAY, 2.0**slot.failures - 1.0)
                slot.restart_at = now + delay
                log.warning(
                    "worker.died",
                    worker_id=self.worker_id(slot),
                    exitcode=process.exitcode,
                    restart_in_s=delay,
                )
            if now >= slot.restart_at:
                slot.restart_at = 0.0
                self._spawn(slot)
                restarted += 1
        self.restarts += restarted
        return restarted

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM every worker, wait for running jobs up to the grace period, then SIGKILL."""
        alive = [s.process for s in self._slots if s.process is not None and s.process.is_alive()]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + grace_seconds + 10.0
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.is_alive():
                log.warning("worker.killed", worker_pid=process.pid)
                process.kill()
                process.join(5.0)
