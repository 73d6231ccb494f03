"""Shallow, bounded discovery of ``<root>/**/checkpoints/global_step_<N>`` dirs.

The walk reads directory entries only (``scandir``; one ``stat`` per visited dir for loop detection).
It stops at ``max_depth`` levels below the root, does not enter hidden dirs, does not go below a dir
that holds ``checkpoints/`` (its siblings are logs, tensorboard and videos, often huge), lists
``checkpoints/`` itself one level deep and never enters a step dir: that is :func:`list_step`'s job.
Symlinked dirs are followed once; a dir already seen (same device and inode) is skipped, which
breaks symlink loops. Errors are reported through ``on_error`` and the walk goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from ckptd.detect import parse_step_dir_name

CHECKPOINTS_DIR = "checkpoints"
DEFAULT_MAX_DEPTH = 4

log = structlog.get_logger("ckptd.watch")

ErrorHook = Callable[[Path, OSError], None]


@dataclass(frozen=True)
class StepDir:
    root: Path
    experiment: str  # the dir holding checkpoints/, relative to root (the root's name for ".")
    step: int
    path: Path


def log_skipped_dir(path: Path, error: OSError) -> None:
    log.warning("scan.skipped_dir", path=str(path), error=type(error).__name__, detail=error.strerror)


def find_step_dirs(
    root: Path,
    max_depth: int = DEFAULT_MAX_DEPTH,
    *,
    on_error: ErrorHook | None = None,
    reuse: Mapping[str, StepDir] | None = None,
) -> list[StepDir]:
    """Every ``global_step_<int>`` dir under ``root`` whose experiment dir is ≤ ``max_depth`` deep.

    ``reuse`` maps ``str(path)`` to a :class:`StepDir` from an earlier call with the same root; those
    objects are returned again instead of new ones (pathlib objects dominate a warm scan's cost).
    """
    report = on_error or log_skipped_dir
    known = reuse or {}
    found: list[StepDir] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while stack:
        folder, rel, depth = stack.pop()
        subdirs = _visit(folder, seen, report)
        if subdirs is None:
            continue
        if CHECKPOINTS_DIR in subdirs:
            found.extend(_step_dirs(root, folder, rel or root.absolute().name, report, known))
        elif depth < max_depth:
            for name in sorted(subdirs, reverse=True):
                stack.append((f"{folder}/{name}", f"{rel}/{name}" if rel else name, depth + 1))
    found.sort(key=lambda s: (s.experiment, s.step))
    return found


def _visit(folder: str, seen: set[tuple[int, int]], report: ErrorHook) -> set[str] | None:
    """Names of the subdirs worth a look in ``folder``; None when unreadable or already visited."""
    try:
        st = os.stat(folder)  # noqa: PTH116 -- plain str paths: pathlib dominated warm-scan CPU
        identity = (st.st_dev, st.st_ino)
        if identity in seen:
            return None
        seen.add(identity)
        with os.scandir(folder) as it:
            return {entry.name for entry in it if _worth_entering(entry)}
    except OSError as error:
        report(Path(folder), error)
        return None


def _worth_entering(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    return not name.startswith(".") and parse_step_dir_name(name) is None and _is_dir(entry)


def _step_dirs(
    root: Path, experiment_dir: str, experiment: str, report: ErrorHook, known: Mapping[str, StepDir]
) -> list[StepDir]:
    folder = f"{experiment_dir}/{CHECKPOINTS_DIR}"
    steps: list[StepDir] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                step = parse_step_dir_name(entry.name)
                if step is None or not _is_dir(entry):
                    continue
                old = known.get(entry.path)
                if old is None or old.experiment != experiment:
                    old = StepDir(root=root, experiment=experiment, step=step, path=Path(entry.path))
                steps.append(old)
    except OSError as error:
        report(Path(folder), error)
    return steps


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
