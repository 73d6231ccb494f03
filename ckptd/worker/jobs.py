"""Pure mapping between queue jobs and conversion requests, and one-line error text."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptd.config import WatchConfig, WorkersConfig

if TYPE_CHECKING:  # ckptd.convert imports torch; the supervisor only needs job_options
    from ckptd.convert.api import ConvertRequest


def job_options(watch: WatchConfig, workers: WorkersConfig) -> dict[str, Any]:
    """What a job needs to know from its watch entry, frozen at enqueue time."""
    return {
        "base_model": str(watch.base_model) if watch.base_model else None,
        "dtype": watch.dtype,
        "lora": watch.lora,
        "lora_config": str(watch.lora_config) if watch.lora_config else None,
        "max_shard_size": workers.max_shard_size,
        "threads": workers.threads,
        "memory_budget_bytes": workers.memory_mb * 1024 * 1024 if workers.memory_mb else None,
        "on_done": list(watch.on_done),
        "hook_timeout": watch.hook_timeout,
    }


def request_for(source: str, output: str, options: dict[str, Any]) -> ConvertRequest:
    from ckptd.convert.api import ConvertRequest

    def optional_path(key: str) -> Path | None:
        value = options.get(key)
        return Path(value) if value else None

    return ConvertRequest(
        source=Path(source),
        output=Path(output),
        base_model=optional_path("base_model"),
        dtype=options.get("dtype"),
        lora=options.get("lora") or "merge",
        lora_config=optional_path("lora_config"),
        max_shard_bytes=int(options.get("max_shard_size") or 5 * 1000**3),
        threads=int(options.get("threads") or 2),
        memory_budget_bytes=options.get("memory_budget_bytes"),
    )


def describe_os_error(exc: OSError, source: str) -> tuple[str, bool]:
    """(one-line message, permanent?) for an OSError raised during a conversion."""
    where = exc.filename or source
    if exc.errno == errno.ENOSPC:
        return f"{where}: disk full; free space on the output filesystem (the job will retry)", False
    if exc.errno == errno.EDQUOT:
        return f"{where}: disk quota exceeded; raise the quota (the job will retry)", False
    if isinstance(exc, FileNotFoundError) and not Path(source).exists():
        return f"{source}: source removed while converting (trainer keep-last-N?)", True
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{where}: permission denied; let the ckptd user read the checkpoint and write the output",
            True,
        )
    return f"{where}: {exc.strerror or exc}", False


def summarize_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("reader", "dtype", "tensor_count", "tensor_bytes", "bytes_read", "timings_s", "warnings")
    return {key: manifest.get(key) for key in keys}
