"""Keep conversions from filling the disk the trainer needs: hold a job while space is short."""

from __future__ import annotations

import shutil
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def shortage(needed: int, free: int, reserve: int) -> int:
    """How many bytes are missing to write ``needed`` and still leave ``reserve`` free (0 = enough)."""
    return max(0, needed + reserve - free)


def describe(output: Path, needed: int, free: int, reserve: int) -> str:
    gb = 1e9
    return (
        f"{output.parent}: waiting for disk space: needs {needed / gb:.2f} GB + "
        f"{reserve / gb:.2f} GB reserve, {free / gb:.2f} GB free; free space or lower disk.reserve_bytes"
    )
