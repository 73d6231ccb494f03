"""The worker loop: ``run_once(now)`` claims and runs at most one job; ``run_forever`` repeats it."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ckptd.config import Config
from ckptd.convert.api import ConvertRequest
from ckptd.convert.pipeline import convert_checkpoint
from ckptd.convert.registry import detect
from ckptd.errors import CkptdError, LeaseLostError
from ckptd.service import diskguard
from ckptd.service.hooks import run_hook
from ckptd.verify.manifest import MANIFEST_NAME
from ckptd.verify.publish import publish_dir
from ckptd.worker.jobs import describe_os_error, request_for, summarize_manifest
from ckptd.worker.lease import LeaseKeeper

if TYPE_CHECKING:
    from ckptd.queue.repository import Claim, JobRepository

log = structlog.get_logger("ckptd.worker")


class ShutdownRequestedError(CkptdError):
    """The daemon is stopping and the grace period ran out: release the job for a later run."""


class WorkerHooks:
    """Conversion hooks for a job owned through a lease: fenced publish, stop on lease loss."""

    def __init__(self, repo: JobRepository, claim: Claim, lease: LeaseKeeper, worker: Worker) -> None:
        self._repo = repo
        self._claim = claim
        self._lease = lease
        self._worker = worker

    def progress(self, done_bytes: int, total_bytes: int) -> None:
        return None

    def check_alive(self) -> None:
        if self._lease.lost.is_set():
            raise LeaseLostError(f"job {self._claim.job.id}: lease lost; another worker owns it now")
        if self._worker.past_grace():
            raise ShutdownRequestedError(f"job {self._claim.job.id}: shutdown grace period over")

    def publish(self, staging: Path, final: Path) -> None:
        manifest = json.loads((staging / MANIFEST_NAME).read_text())
        self._repo.publish_and_finish(
            self._claim.job.id,
            self._claim.token,
            lambda: publish_dir(staging, final),
            summarize_manifest(manifest),
        )


class Worker:
    def __init__(self, repo: JobRepository, config: Config, worker_id: str) -> None:
        self.repo = repo
        self.config = config
        self.worker_id = worker_id
        self.stop = threading.Event()
        self._stop_requested_at: float | None = None
        self._parent_pid = os.getppid()

    def request_stop(self) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self.stop.set()

    def past_grace(self) -> bool:
        started = self._stop_requested_at
        return started is not None and time.monotonic() - started > self.config.workers.grace_seconds

    def run_forever(self) -> None:
        self.repo.register_worker(self.worker_id, pid=os.getpid(), host=socket.gethostname())
        log.info("worker.started", worker_id=self.worker_id)
        try:
            while not self.stop.is_set():
                if os.getppid() != self._parent_pid:
                    log.warning("worker.orphaned", parent_pid=self._parent_pid)
                    self.request_stop()
                    break
                if not self.run_once():
                    self.stop.wait(self.config.workers.poll_seconds)
                    self.repo.worker_heartbeat(self.worker_id)
        finally:
            self.repo.worker_stopped(self.worker_id)
            log.info("worker.stopped", worker_id=self.worker_id)

    def run_once(self) -> bool:
        claim = self.repo.claim(self.worker_id, self.config.workers.lease_seconds)
        if claim is None:
            return False
        job = claim.job
        structlog.contextvars.bind_contextvars(job_id=job.id, experiment=job.experiment, step=job.step)
        try:
            log.info("job.claimed", attempt=job.attempts, source=job.source, output=job.output)
            self._run(claim)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "experiment", "step")
        return True

    def _run(self, claim: Claim) -> None:
        workers = self.config.workers
        published: Path | None = None
        with LeaseKeeper(
            self.repo, claim.job.id, claim.token, workers.lease_seconds, workers.heartbeat_seconds
        ) as lease:
            try:
                published = self._convert(claim, lease)
            except LeaseLostError as exc:
                log.warning("job.lease_lost", error=str(exc))
            except ShutdownRequestedError as exc:
                self._release(claim, str(exc))
            except CkptdError as exc:
                self._fail(claim, str(exc), permanent=exc.permanent)
            except OSError as exc:
                message, permanent = describe_os_error(exc, claim.job.source)
                self._fail(claim, message, permanent=permanent)
            except Exception as exc:
                log.exception("job.crashed")
                self._fail(claim, f"unexpected {type(exc).__name__}: {exc}", permanent=False)
        # After the lease: the job is done, so its lease can no longer be extended (the keeper would
        # report it lost while a long hook runs).
        if published is not None:
            self._run_hook(claim, published)

    def _convert(self, claim: Claim, lease: LeaseKeeper) -> Path | None:
        """Convert and publish; the published output when the post-conversion hook should run."""
        job = claim.job
        if _already_published(job.source, job.output):
            self.repo.publish_and_finish(job.id, claim.token, lambda: None, {"adopted": True})
            log.info("job.done", adopted=True, output=job.output)
            return None
        request = request_for(job.source, job.output, job.options)
        if self._short_of_disk(claim, request):
            return None
        result = convert_checkpoint(request, WorkerHooks(self.repo, claim, lease, self))
        log.info(
            "job.done", output=str(result.output), seconds=round(result.seconds, 3), tensors=result.tensors
        )
        return result.output

    def _short_of_disk(self, claim: Claim, request: ConvertRequest) -> bool:
        """Hold the job (state waiting) when writing it would eat into the output disk's reserve."""
        converter, source = detect(request.source)
        needed = int(converter.plan(source, request).get("bytes_to_write") or 0)
        free = diskguard.free_bytes(request.output)
        reserve = self.config.disk.reserve_bytes
        if diskguard.shortage(needed, free, reserve) == 0:
            return False
        reason = diskguard.describe(request.output, needed, free, reserve)
        recheck = self.config.disk.recheck_seconds
        self.repo.hold(claim.job.id, claim.token, reason, time.time() + recheck)
        log.warning("job.waiting_for_disk", needed=needed, free=free, reserve=reserve)
        return True

    def _run_hook(self, claim: Claim, output: Path) -> None:
        job = claim.job
        argv = list(job.options.get("on_done") or [])
        if not argv:
            return
        fields = {
            "job_id": job.id,
            "output": output,
            "source": job.source,
            "experiment": job.experiment,
            "step": job.step,
            "format": job.format,
        }
        result = run_hook(argv, fields, float(job.options.get("hook_timeout") or 600.0))
        try:
            self.repo.record_hook(job.id, result.as_dict())
        except Exception:  # the conversion is done and published; a lost hook record must not kill us
            log.exception("hook.record_failed", summary=result.summary())
        if result.ok:
            log.info("hook.done", seconds=round(result.seconds, 3))
        else:
            log.error("hook.failed", summary=result.summary(), output_tail=result.output_tail[-500:])

    def _fail(self, claim: Claim, message: str, *, permanent: bool) -> None:
        try:
            state = self.repo.fail(claim.job.id, claim.token, message, permanent=permanent)
        except LeaseLostError:
            log.warning("job.lease_lost", error=message)
            return
        log.error("job.failed", error=message, permanent=permanent, state=str(state))

    def _release(self, claim: Claim, reason: str) -> None:
        try:
            self.repo.release(claim.job.id, claim.token, reason)
            log.info("job.released", reason=reason)
        except LeaseLostError:
            log.warning("job.lease_lost", error=reason)


def _already_published(source: str, output: str) -> bool:
    """A crash between the rename and the DB commit leaves a finished output: adopt it, don't redo it."""
    manifest = Path(output) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text()).get("source", "")
    except (OSError, ValueError):
        return False
    return Path(recorded).resolve().is_relative_to(Path(source).resolve())
