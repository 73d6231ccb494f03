"""The periodic scan: the source of truth for which checkpoints exist and are complete.

Each :meth:`Scanner.scan` walks the roots shallowly (:func:`find_step_dirs`) and classifies every step
dir. Cost control: a step already found complete is re-checked with a single ``stat`` of its marker
file (the file its fingerprint describes: tracker, DCP ``.metadata`` or ``full_weights.pt``); only when
that stat differs (rewritten or gone) is the step listed and classified again. Incomplete steps are
listed every scan, which is what the settle window needs. Per-step state is dropped as soon as a step
dir disappears (keep-last-N), so memory follows what is on disk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ckptd.detect import (
    NOTHING_TO_SETTLE,
    Complete,
    FileStat,
    Incomplete,
    Observation,
    classify,
    list_step,
    observe,
)
from ckptd.watch.discover import DEFAULT_MAX_DEPTH, StepDir, find_step_dirs

log = structlog.get_logger("ckptd.watch")

DEFAULT_SETTLE_SECONDS = 30.0


@dataclass(frozen=True)
class CheckpointRef:
    root: Path
    experiment: str
    step: int
    path: Path
    format: str
    fingerprint: str
    reason: str = ""
    layout: str = ""
    iteration: int | None = None


@dataclass(frozen=True)
class PendingRef:
    """A step that is not (or not yet) convertible, and why."""

    root: Path
    experiment: str
    step: int
    path: Path
    reason: str


@dataclass
class ScanResult:
    complete: list[CheckpointRef] = field(default_factory=list)
    incomplete: list[PendingRef] = field(default_factory=list)
    ignored: list[PendingRef] = field(default_factory=list)  # NotACheckpoint: never convertible
    new: list[CheckpointRef] = field(default_factory=list)  # complete, fingerprint not reported before
    skipped: int = 0  # dirs skipped on errors (unreadable, vanished mid-scan)
    seconds: float = 0.0
    # Seconds until the earliest settle window ends (a step may then turn complete): scan again then
    # rather than a whole interval later. None when nothing is settling.
    recheck_in: float | None = None


@dataclass(frozen=True)
class _Done:
    ref: CheckpointRef
    marker_path: str
    marker_stat: FileStat


class Scanner:
    """Periodic classification of every step dir under ``roots``; keeps per-step state between scans.

    Tables are keyed by ``str(path)``: hashing strings is much cheaper than hashing pathlib objects,
    which matters at thousands of steps per scan.
    """

    def __init__(
        self,
        roots: Sequence[Path],
        max_depth: int = DEFAULT_MAX_DEPTH,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.roots = [Path(r) for r in roots]
        self.max_depth = max_depth
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._step_dirs: dict[Path, dict[str, StepDir]] = {root: {} for root in self.roots}
        self._observations: dict[str, Observation] = {}
        self._complete: dict[str, _Done] = {}
        self._reported: dict[str, str] = {}
        self._warned: set[tuple[str, str]] = set()
        self._result = ScanResult()

    def scan(self) -> ScanResult:
        started = time.perf_counter()
        now = self._clock()
        self._result = result = ScanResult()
        steps = [s for root in self.roots for s in self._find(root)]
        latest = _latest_step_per_experiment(steps)
        for step_dir in steps:
            self._check(step_dir, step_dir.step < latest[(step_dir.root, step_dir.experiment)], now)
        self._forget_except({str(s.path) for s in steps})
        result.seconds = time.perf_counter() - started
        log.info(
            "scan.finished",
            roots=len(self.roots),
            steps=len(steps),
            complete=len(result.complete),
            new=len(result.new),
            incomplete=len(result.incomplete),
            ignored=len(result.ignored),
            skipped=result.skipped,
            seconds=round(result.seconds, 4),
        )
        return result

    def _find(self, root: Path) -> list[StepDir]:
        if not root.exists():
            self._skip(root, FileNotFoundError(2, os.strerror(2)))
            return []
        found = find_step_dirs(root, self.max_depth, on_error=self._skip, reuse=self._step_dirs[root])
        self._step_dirs[root] = {str(s.path): s for s in found}
        return found

    def _check(self, step_dir: StepDir, later_sibling: bool, now: float) -> None:
        key = str(step_dir.path)
        done = self._complete.get(key)
        if done is not None and _stat_or_none(done.marker_path) == done.marker_stat:
            self._add_complete(key, done.ref)
            return
        self._complete.pop(key, None)
        try:
            listing = list_step(step_dir.path, later_sibling=later_sibling)
        except OSError as error:
            self._skip(step_dir.path, error)
            return
        previous = self._observations.get(key)
        outcome = classify(listing, previous, now, self.settle_seconds)
        if isinstance(outcome, Complete):
            self._observations.pop(key, None)
            ref = _ref(step_dir, outcome)
            self._complete[key] = _Done(ref, f"{key}/{outcome.marker}", outcome.marker_stat)
            self._add_complete(key, ref)
            return
        observation = self._observations[key] = observe(listing, previous, now)
        if observation.signature != NOTHING_TO_SETTLE and isinstance(outcome, Incomplete):
            self._note_settling(max(0.0, observation.since + self.settle_seconds - now))
        pending = PendingRef(step_dir.root, step_dir.experiment, step_dir.step, step_dir.path, outcome.reason)
        (self._result.incomplete if isinstance(outcome, Incomplete) else self._result.ignored).append(pending)

    def _note_settling(self, left: float) -> None:
        current = self._result.recheck_in
        self._result.recheck_in = left if current is None else min(current, left)

    def _add_complete(self, key: str, ref: CheckpointRef) -> None:
        self._result.complete.append(ref)
        if self._reported.get(key) != ref.fingerprint:
            self._reported[key] = ref.fingerprint
            self._result.new.append(ref)

    def _skip(self, path: Path, error: OSError) -> None:
        """Log a skipped dir: a warning the first time, debug while it stays that way."""
        self._result.skipped += 1
        key = (str(path), type(error).__name__)
        level = log.debug if key in self._warned else log.warning
        self._warned.add(key)
        level("scan.skipped_dir", path=str(path), error=type(error).__name__, detail=error.strerror)

    def _forget_except(self, present: set[str]) -> None:
        for table in (self._observations, self._complete, self._reported):
            for key in [k for k in table if k not in present]:
                del table[key]


def _ref(step_dir: StepDir, done: Complete) -> CheckpointRef:
    return CheckpointRef(
        root=step_dir.root,
        experiment=step_dir.experiment,
        step=step_dir.step,
        path=step_dir.path,
        format=done.format,
        fingerprint=done.fingerprint,
        reason=done.reason,
        layout=done.layout,
        iteration=done.iteration,
    )


def _stat_or_none(path: str) -> FileStat | None:
    try:
        return FileStat.of(os.stat(path))  # noqa: PTH116 -- str paths: pathlib dominated warm-scan CPU
    except OSError:
        return None


def _latest_step_per_experiment(steps: list[StepDir]) -> dict[tuple[Path, str], int]:
    latest: dict[tuple[Path, str], int] = {}
    for s in steps:
        key = (s.root, s.experiment)
        latest[key] = max(latest.get(key, s.step), s.step)
    return latest
