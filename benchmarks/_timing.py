"""Shared by the benchmark scripts: time a command under /usr/bin/time -v, evict files from the cache."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (after writing back anything dirty)."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(command: str) -> tuple[float, int]:
    """(wall seconds, peak RSS MiB) of a shell command under /usr/bin/time -v."""
    result = subprocess.run(
        ["/usr/bin/time", "-v", "bash", "-c", command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{command!r} failed: {result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    assert wall and rss, result.stderr
    hours, minutes, seconds = wall.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), int(rss.group(1)) // 1024
