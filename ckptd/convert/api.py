"""Contracts between the conversion pipeline, the format converters and their callers.

``ckptd convert`` and the daemon's workers both call :func:`ckptd.convert.pipeline.convert_checkpoint`
with a :class:`ConvertRequest` and a :class:`ConvertHooks`; the pipeline picks a :class:`Converter`
from the registry, which writes weight shards into a staging dir through the shared writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ckptd.convert.writer import ShardRecord

DtypeName = Literal["keep", "bf16", "fp16", "fp32"]
LoraMode = Literal["merge", "adapter"]

DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3


@dataclass(frozen=True)
class ConvertRequest:
    source: Path
    output: Path
    base_model: Path | None = None
    # None: take the base config's torch_dtype (falling back to keep).
    dtype: DtypeName | None = None
    lora: LoraMode = "merge"
    lora_config: Path | None = None
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    threads: int = 4
    force: bool = False
    # Bytes of shards in flight at once (Megatron); None: CKPTD_CONVERT_MEMORY_MB or the default.
    memory_budget_bytes: int | None = None


@dataclass
class SourceInfo:
    """What a converter recognised on disk; ``checkpoint_dir`` is the folder it will read."""

    format: str
    checkpoint_dir: Path
    reader: str
    step: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class WeightsReport:
    """What a converter wrote into the staging dir, for verification and the manifest."""

    reader: str
    base_config: dict[str, Any]  # config.json to write (the pipeline sets torch_dtype)
    base_model_dir: Path | None  # tokenizer, generation config and chat template are copied from here
    dtype: str  # config.json name of what was written: bfloat16, float16, float32
    expected_shapes: dict[str, tuple[int, ...]]  # every key the architecture needs, HF file names
    shards: list[ShardRecord]  # from ShardedWriter.finish()
    bytes_read: int
    layout: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    adapter_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConvertResult:
    output: Path
    format: str
    reader: str
    step: int | None
    tensors: int
    bytes_written: int
    seconds: float
    manifest: dict[str, Any]


class ConvertHooks(Protocol):
    def progress(self, done_bytes: int, total_bytes: int) -> None:
        """Called as weight bytes are written (for progress bars and heartbeats)."""

    def check_alive(self) -> None:
        """Raise LeaseLostError when the caller no longer owns the job; called between shards."""

    def publish(self, staging: Path, final: Path) -> None:
        """Move the verified staging dir to its final path atomically (fenced in workers)."""


class Converter(Protocol):
    name: str

    def probe(self, source: Path) -> SourceInfo | None:
        """Recognise ``source`` (a step dir, actor dir, format dir or file); None if not this format."""

    def plan(self, source: SourceInfo, request: ConvertRequest) -> dict[str, Any]:
        """What a conversion would do, without doing it (``ckptd convert --plan``): the inferred
        layout, bytes to read and write, and the output shard plan (file -> tensor count, bytes)."""

    def write_weights(
        self, source: SourceInfo, request: ConvertRequest, staging: Path, hooks: ConvertHooks
    ) -> WeightsReport:
        """Write sharded weights and their index into ``staging`` (via ckptd.convert.writer).

        The pipeline then writes config.json from the report, copies the base model's assets,
        verifies, writes ckptd.json and publishes. With ``request.lora == "adapter"`` the converter
        also writes the PEFT adapter dir and names it in ``report.adapter_dir``.
        """
