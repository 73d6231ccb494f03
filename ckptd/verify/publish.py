"""Staging dirs, the per-output lock, and the atomic publish."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ckptd.convert.writer import PROGRESS_NAME
from ckptd.errors import ConfigError, OutputExistsError, StagingBusyError

PARTIAL_SUFFIX = ".partial"


def staging_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.ckptd-lock")


def check_output_location(output: Path) -> None:
    """Trainers glob and sort ``checkpoints/``: never write there (pitfalls.md 14)."""
    if "checkpoints" in output.resolve().parts:
        raise ConfigError(f"{output}: output must not be inside a checkpoints/ folder; choose another --out")


@contextlib.contextmanager
def staging_lock(output: Path) -> Iterator[None]:
    """Exclusive use of ``<out>.partial`` by one live process; released by the kernel if it dies."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StagingBusyError(
                f"{staging_path(output)}: another live ckptd process is writing this output; will retry"
            ) from None
        yield
    finally:
        os.close(fd)


def prepare_staging(output: Path, keep: frozenset[str] = frozenset({PROGRESS_NAME})) -> Path:
    """Create ``<out>.partial``; keep only shards listed in a previous attempt's progress file."""
    staging = staging_path(output)
    staging.mkdir(parents=True, exist_ok=True)
    kept = set(keep)
    progress = staging / PROGRESS_NAME
    if progress.exists():
        import json

        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept |= {s["filename"] for s in json.loads(progress.read_text())["shards"]}
    for child in staging.iterdir():
        if child.name in kept:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return staging


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(staging: Path, final: Path, *, replace: bool = False) -> None:
    """Rename the finished staging dir onto ``final``: readers see nothing or everything."""
    (staging / PROGRESS_NAME).unlink(missing_ok=True)
    for child in staging.rglob("*"):
        if child.is_file():
            with child.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(staging)
    if final.exists():
        if not replace:
            raise OutputExistsError(f"{final}: already exists; pass --force to replace it")
        old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)
    _fsync_dir(final.parent)
