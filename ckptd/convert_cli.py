"""``ckptd convert``: parse sizes, show a progress bar, print the result or the plan."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from ckptd.config import DTYPES, LORA_MODES
from ckptd.convert.api import ConvertRequest, DtypeName, LoraMode
from ckptd.convert.pipeline import DirectHooks, convert_checkpoint
from ckptd.errors import ConfigError

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_size(text: str, option: str = "--max-shard-size") -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{option}: cannot read {text!r}; use e.g. 5GB, 500MB, 2GiB")
    return int(float(match.group(1)) * _UNITS[unit])


class ProgressHooks(DirectHooks):
    def __init__(self, progress: Progress, *, replace: bool) -> None:
        super().__init__(replace=replace)
        self._progress = progress
        self._task = progress.add_task("converting", total=None)

    def progress(self, done_bytes: int, total_bytes: int) -> None:
        self._progress.update(self._task, completed=done_bytes, total=total_bytes)


def build_request(
    *,
    src: Path,
    out: Path,
    base_model: Path | None,
    dtype: str | None,
    lora: str,
    lora_config: Path | None,
    max_shard_size: str,
    threads: int,
    force: bool,
    memory_budget: str | None = None,
) -> ConvertRequest:
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if lora not in LORA_MODES:
        raise ConfigError(f"--lora: {lora!r} is not one of {', '.join(LORA_MODES)}")
    return ConvertRequest(
        source=src,
        output=out,
        base_model=base_model,
        dtype=cast(DtypeName | None, dtype),
        lora=cast(LoraMode, lora),
        lora_config=lora_config,
        max_shard_bytes=parse_size(max_shard_size),
        threads=max(1, threads),
        force=force,
        memory_budget_bytes=parse_size(memory_budget, "--memory-budget") if memory_budget else None,
    )


def run_convert(request: ConvertRequest, *, plan: bool) -> None:
    if plan:
        from ckptd.convert.registry import detect

        converter, source = detect(request.source)
        described: dict[str, Any] = converter.plan(source, request)
        sys.stdout.write(json.dumps(described, indent=2, default=str) + "\n")
        return
    console = Console(stderr=True)
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        result = convert_checkpoint(request, ProgressHooks(progress, replace=request.force))
    console.print(
        f"converted {result.format} ({result.reader}) step {result.step}: {result.tensors} tensors, "
        f"{result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f}s -> {result.output}",
        highlight=False,
        soft_wrap=True,
    )
