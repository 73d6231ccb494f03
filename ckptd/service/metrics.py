"""Prometheus metrics, read from the DB at scrape time so every worker process is counted."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ckptd.queue.states import JobState
from ckptd.service.diskguard import free_bytes

if TYPE_CHECKING:
    from ckptd.queue.records import Job
    from ckptd.queue.repository import JobRepository

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)


@dataclass
class DaemonGauges:
    """Numbers only the supervisor knows, refreshed by its main loop."""

    last_scan_at: float = 0.0
    worker_restarts: int = 0


def _histogram(jobs: Sequence[Job]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "ckptd_conversion_duration_seconds", "Wall time of finished conversions", labels=["format"]
    )
    by_format: dict[str, list[float]] = {}
    for job in jobs:
        if job.started_at is not None and job.finished_at is not None:
            by_format.setdefault(job.format, []).append(job.finished_at - job.started_at)
    for fmt, durations in sorted(by_format.items()):
        buckets = [(str(b), float(sum(d <= b for d in durations))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        family.add_metric([fmt], buckets, sum(durations))
    return family


def _bytes(jobs: Sequence[Job]) -> Iterator[CounterMetricFamily]:
    read = CounterMetricFamily(
        "ckptd_bytes_read", "Checkpoint bytes read by finished conversions", labels=["format"]
    )
    written = CounterMetricFamily(
        "ckptd_bytes_written", "Tensor bytes written by finished conversions", labels=["format"]
    )
    totals: dict[str, list[int]] = {}
    for job in jobs:
        result: Any = job.result or {}
        pair = totals.setdefault(job.format, [0, 0])
        pair[0] += int(result.get("bytes_read") or 0)
        pair[1] += int(result.get("tensor_bytes") or 0)
    for fmt, (read_bytes, written_bytes) in sorted(totals.items()):
        read.add_metric([fmt], read_bytes)
        written.add_metric([fmt], written_bytes)
    yield read
    yield written


class CkptdCollector:
    """A prometheus_client collector (duck-typed: ``collect()``)."""

    def __init__(self, repo: JobRepository, output_roots: Sequence[Path], gauges: DaemonGauges) -> None:
        self.repo = repo
        self.output_roots = list(output_roots)
        self.gauges = gauges

    def collect(self) -> Iterator[Any]:
        counts = self.repo.counts()
        jobs = GaugeMetricFamily("ckptd_jobs", "Jobs by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([str(state)], counts.get(str(state), 0))
        yield jobs
        done = self.repo.list_jobs(states=[str(JobState.DONE)])
        yield _histogram(done)
        yield from _bytes(done)
        yield GaugeMetricFamily(
            "ckptd_last_scan_timestamp_seconds",
            "Unix time of the last finished scan",
            value=self.gauges.last_scan_at,
        )
        yield CounterMetricFamily(
            "ckptd_worker_restarts",
            "Worker processes restarted after dying",
            value=self.gauges.worker_restarts,
        )
        disk = GaugeMetricFamily("ckptd_output_free_bytes", "Free bytes on each output root", labels=["root"])
        for root in self.output_roots:
            disk.add_metric([str(root)], free_bytes(root))
        yield disk


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve_metrics(listen: str, collector: CkptdCollector) -> Callable[[], None]:
    """Start the HTTP endpoint in a daemon thread; return a function that stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()

    return stop
