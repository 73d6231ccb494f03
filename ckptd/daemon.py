"""The supervisor: scanner + watcher + reaper + worker pool, signals and systemd notify.

The watcher only says *when* to look; the periodic shallow scan decides *what exists*.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import cast

import structlog

from ckptd.config import Config, WatchConfig
from ckptd.queue.engine import make_engine
from ckptd.queue.repository import JobRepository
from ckptd.queue.schema import upgrade
from ckptd.service.metrics import CkptdCollector, DaemonGauges, serve_metrics
from ckptd.service.notify import SystemdNotifier
from ckptd.watch import CheckpointRef, Scanner, WakeupObserver, WatchMode
from ckptd.worker.jobs import job_options
from ckptd.worker.pool import WorkerPool

log = structlog.get_logger("ckptd.daemon")

StopWhen = Callable[[JobRepository], bool]
_MAX_SLEEP = 1.0
_TICK_WRITE_SECONDS = 5.0


@dataclass
class _Watched:
    watch: WatchConfig
    scanner: Scanner


class Daemon:
    def __init__(self, config: Config, *, stop_when: StopWhen | None = None) -> None:
        self.config = config
        self.stop_when = stop_when
        self.supervisor_id = f"supervisor-{socket.gethostname()}-{os.getpid()}"
        self.notifier = SystemdNotifier()
        self._stop = threading.Event()
        self._seen: set[tuple[str, str]] = set()
        self._watched = [
            _Watched(w, Scanner([w.root], max_depth=w.max_depth, settle_seconds=config.scan.settle_seconds))
            for w in config.watch
        ]
        self.observer = WakeupObserver([w.root for w in config.watch], mode=cast(WatchMode, config.scan.mode))
        self.pool = WorkerPool(config)
        self.engine = make_engine(config.database.url)
        self.repo = JobRepository(
            self.engine,
            backoff_base_s=config.queue.backoff_base,
            backoff_cap_s=config.queue.backoff_cap,
        )
        self.gauges = DaemonGauges()
        self._last_tick_write = 0.0
        self._stop_metrics: Callable[[], None] | None = None

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("daemon.stop_requested", signal=signal.Signals(signum).name)
        self.request_stop()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        upgrade(self.engine)
        self.repo.register_worker(self.supervisor_id, pid=os.getpid(), host=socket.gethostname())
        log.info(
            "daemon.started",
            roots=[str(w.root) for w in self.config.watch],
            workers=self.config.workers.count,
            database=self.config.database.url,
        )
        self.observer.start()
        self.pool.start()
        self._start_metrics()
        try:
            self.scan_and_enqueue()
            self.notifier.ready(self.status_line())
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        next_scan = time.monotonic() + self.config.scan.interval
        next_reap = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.observer.wait(0) or now >= next_scan:
                self.observer.clear()
                recheck_in = self.scan_and_enqueue()
                next_scan = time.monotonic() + min(self.config.scan.interval, recheck_in)
            if now >= next_reap:
                self._reap()
                next_reap = now + self.config.queue.reap_interval
            self.pool.check()
            self._tick()
            if self.stop_when is not None and self.stop_when(self.repo):
                break
            self.observer.wait(min(self._max_sleep(), max(0.0, next_scan - time.monotonic())))

    def _max_sleep(self) -> float:
        """Wake often enough that the watchdog (pinged at half WATCHDOG_USEC) is never late."""
        interval = self.notifier.watchdog_interval
        return _MAX_SLEEP if interval is None else min(_MAX_SLEEP, interval / 2)

    def _start_metrics(self) -> None:
        listen = self.config.metrics.listen
        if not listen:
            return
        roots = [w.output_root for w in self.config.watch]
        self._stop_metrics = serve_metrics(listen, CkptdCollector(self.repo, roots, self.gauges))
        log.info("metrics.listening", listen=listen)

    def _tick(self) -> None:
        self.gauges.worker_restarts = self.pool.restarts
        now = time.monotonic()
        ping = self.notifier.watchdog_due(now)
        # `ckptd health` reads this row. A watchdog ping always follows a committed write in the same
        # iteration, so a loop stuck on the database (write lock held elsewhere) stops the pings.
        if ping or now - self._last_tick_write >= _TICK_WRITE_SECONDS:
            self.repo.worker_heartbeat(self.supervisor_id)
            self._last_tick_write = now
        if self.notifier.enabled:  # the counts cost a query: only when systemd is listening
            self.notifier.status(self.status_line())
        if ping:
            self.notifier.watchdog(now)

    def _reap(self) -> None:
        for job_id in self.repo.reap():
            log.warning("job.lease_expired", job_id=job_id)

    def scan_and_enqueue(self) -> float:
        """Scan every root and enqueue what is complete; return when a settling step is worth a rescan."""
        recheck_in = float("inf")
        for watched in self._watched:
            result = watched.scanner.scan()
            for ref in result.complete:
                self._enqueue(watched.watch, ref)
            if result.recheck_in is not None:
                recheck_in = min(recheck_in, result.recheck_in)
        self.gauges.last_scan_at = time.time()
        return recheck_in

    def _enqueue(self, watch: WatchConfig, ref: CheckpointRef) -> None:
        source = str(ref.path)
        key = (source, ref.fingerprint)
        if key in self._seen:
            return
        experiment, step, fmt = ref.experiment, ref.step, ref.format
        log.info("checkpoint.detected", experiment=experiment, step=step, format=fmt, source=source)
        output = watch.output_root / experiment / Path(source).name
        job, created = self.repo.enqueue(
            source=source,
            output=str(output),
            experiment=experiment,
            step=step,
            format=fmt,
            watch_root=str(watch.root),
            options=job_options(watch, self.config.workers),
            max_attempts=self.config.queue.max_attempts,
        )
        self._seen.add(key)
        if created:
            log.info("job.enqueued", job_id=job.id, experiment=experiment, step=step, output=str(output))

    def status_line(self) -> str:
        counts = self.repo.counts()
        return ", ".join(
            f"{state}={counts.get(state, 0)}" for state in ("running", "queued", "failed", "dead")
        )

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("daemon.stopping", grace_s=self.config.workers.grace_seconds)
        self.observer.stop()
        self.pool.stop(self.config.workers.grace_seconds)
        if self._stop_metrics is not None:
            self._stop_metrics()
        self.repo.worker_stopped(self.supervisor_id)
        self.engine.dispose()
        log.info("daemon.stopped")
