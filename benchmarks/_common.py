"""Shared by the converter benchmarks: the ~2 GB model config, /usr/bin/time -v, cache eviction."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

# Qwen2-style, bf16: 20 layers ≈ 2.02 GB, 40 layers ≈ 3.79 GB (num_hidden_layers set per run).
MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


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
