"""Watching: the shallow periodic scan (source of truth) and inotify wake-up hints."""

from __future__ import annotations

from ckptd.watch.discover import DEFAULT_MAX_DEPTH, StepDir, find_step_dirs
from ckptd.watch.observer import WakeupObserver, WatchMode, WatchStartError
from ckptd.watch.relevance import MARKER_FILES, is_relevant
from ckptd.watch.scanner import DEFAULT_SETTLE_SECONDS, CheckpointRef, PendingRef, Scanner, ScanResult

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_SETTLE_SECONDS",
    "MARKER_FILES",
    "CheckpointRef",
    "PendingRef",
    "ScanResult",
    "Scanner",
    "StepDir",
    "WakeupObserver",
    "WatchMode",
    "WatchStartError",
    "find_step_dirs",
    "is_relevant",
]
