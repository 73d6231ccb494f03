"""FSDP (RLinf) checkpoint -> HF safetensors: DCP or full_weights.pt, LoRA merged or as an adapter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import torch

from ckptd.convert import lora
from ckptd.convert.api import ConvertHooks, ConvertRequest, SourceInfo, WeightsReport
from ckptd.convert.base_model import find_trainer_config, resolve_base_model
from ckptd.convert.dtypes import config_name, dominant_dtype, resolve_target
from ckptd.convert.fsdp.arch import Architecture, load_architecture
from ckptd.convert.fsdp.fullpt import FullPtSource
from ckptd.convert.fsdp.layout import FsdpFiles, locate, step_of
from ckptd.convert.fsdp.plan import FsdpPlan, batches, build_plan
from ckptd.convert.fsdp.source import TensorSource
from ckptd.convert.fsdp.stream import StreamingShardWriter
from ckptd.convert.hfdir import load_config
from ckptd.convert.writer import ShardPlan, ShardRecord
from ckptd.errors import ConversionError

log = structlog.get_logger("ckptd.convert")

# Source bytes read per dcp.load / mmap batch. Shards are streamed, so memory is about three batches
# (one being read, one queued, one being written) whatever the shard size.
BATCH_BYTES = 128 * 1024**2


def open_source(info: SourceInfo) -> TensorSource:
    dcp_dir = info.details.get("dcp_dir")
    if info.reader == "dcp" and dcp_dir:
        from ckptd.convert.fsdp.dcp import DcpSource  # torch.distributed: only when reading DCP

        return DcpSource(Path(dcp_dir))
    return FullPtSource(Path(info.details["full_weights"]))


class _Context:
    """Everything one conversion needs, resolved before any byte is written."""

    def __init__(self, info: SourceInfo, request: ConvertRequest) -> None:
        self.base_dir = resolve_base_model(request, info)
        self.base_config = load_config(self.base_dir)
        self.arch: Architecture = load_architecture(self.base_dir, self.base_config)
        self.source = open_source(info)
        self.target = resolve_target(request.dtype, self.base_config)
        self.merge = request.lora == "merge"
        where = Path(info.details.get("dcp_dir") or info.details["full_weights"])
        self.plan: FsdpPlan = build_plan(
            self.source.entries,
            self.arch,
            self.target,
            merge=self.merge,
            max_shard_bytes=request.max_shard_bytes,
            where=where,
        )
        self.settings: lora.LoraSettings | None = None
        self.stream_seconds = 0.0
        self.warnings = list(self.plan.warnings)
        if self.plan.lora:
            given = lora.read_adapter_config(request.lora_config) if request.lora_config else None
            found = find_trainer_config(info.checkpoint_dir)
            trainer = lora.trainer_lora_config(found[1] if found else None)
            self.settings, extra = lora.resolve_settings(self.plan.lora_ranks, given, trainer)
            self.warnings += extra

    def bytes_to_read(self) -> int:
        keys = {key for name in self.plan.tensors for key in self.plan.source_keys(name, self.merge)}
        if not self.merge:
            keys |= {k for pair in self.plan.lora.values() for k in (pair.a_key, pair.b_key)}
        return sum(self.source.entries[key].nbytes for key in keys)

    def produce(self, shard: ShardPlan) -> Iterator[dict[str, torch.Tensor]]:
        """The shard's tensors in plan order, one source batch (≤ BATCH_BYTES read) at a time."""
        names = [spec.name for spec in shard.tensors]
        keys = [self.plan.source_keys(name, self.merge) for name in names]
        sizes = {key: self.source.entries[key].nbytes for group in keys for key in group}
        for group in batches(keys, sizes, BATCH_BYTES):
            loaded = self.source.load(sorted({key for index in group for key in keys[index]}))
            yield {names[index]: self._finish(names[index], loaded) for index in group}
            del loaded

    def _finish(self, name: str, loaded: dict[str, torch.Tensor]) -> torch.Tensor:
        spec = self.plan.tensors[name]
        tensor = loaded[spec.src]
        if spec.same_as is not None and not torch.equal(tensor, loaded[spec.same_as]):
            raise ConversionError(
                f"{spec.same_as} differs from {spec.src} but the base config ties them; "
                "check --base-model matches the trained model (tie_word_embeddings)"
            )
        if spec.keep_rows is not None:
            tensor = tensor[: spec.keep_rows]
        if spec.lora is not None and self.settings is not None:
            rank = self.plan.lora_ranks[spec.lora.module]
            a, b = loaded[spec.lora.a_key], loaded[spec.lora.b_key]
            tensor = lora.merge(tensor, a, b, self.settings.scale(rank))
        return tensor.to(spec.dtype)


class FsdpConverter:
    name = "fsdp"

    def probe(self, source: Path) -> SourceInfo | None:
        files = locate(source)
        if files is None:
            return None
        return _source_info(files)

    def plan(self, source: SourceInfo, request: ConvertRequest) -> dict[str, Any]:
        ctx = _Context(source, request)
        return {
            "format": "fsdp",
            "reader": source.reader,
            "source": str(source.checkpoint_dir),
            "base_model": str(ctx.base_dir),
            "layout": ctx.source.layout,
            "dtype": config_name(_written_dtype(ctx)),
            "bytes_to_read": ctx.bytes_to_read(),
            "bytes_to_write": ctx.plan.bytes_out,
            "shards": {s.filename: {"tensors": len(s.tensors), "bytes": s.nbytes} for s in ctx.plan.shards},
            "lora": _lora_summary(ctx, request),
            "warnings": ctx.warnings,
        }

    def write_weights(
        self, source: SourceInfo, request: ConvertRequest, staging: Path, hooks: ConvertHooks
    ) -> WeightsReport:
        started = time.monotonic()
        ctx = _Context(source, request)
        writer = StreamingShardWriter(staging, ctx.plan.shards)
        total = ctx.plan.bytes_out
        # [finished shards' tensor bytes, bytes of the shard being written]; called in this thread.
        done = [sum(s.nbytes for s in ctx.plan.shards if s.filename in set(writer.resumed)), 0]

        def on_bytes(count: int) -> None:
            done[1] += count
            hooks.progress(min(done[0] + done[1], total), total)

        def on_shard(record: ShardRecord) -> None:
            done[0], done[1] = done[0] + record.tensor_bytes, 0
            hooks.progress(done[0], total)
            log.info("convert.shard_written", file=record.filename, tensors=len(record.tensors))
            hooks.check_alive()

        hooks.check_alive()
        streaming = time.monotonic()
        writer.write_all_streaming(ctx.produce, on_shard=on_shard, on_bytes=on_bytes)
        records = writer.finish()
        ctx.stream_seconds = time.monotonic() - streaming
        adapter_dir = _write_adapter(ctx, staging, request) if not ctx.merge and ctx.plan.lora else None
        return _report(
            ctx,
            source,
            records=records,
            adapter_dir=adapter_dir,
            request=request,
            seconds=time.monotonic() - started,
        )


def _source_info(files: FsdpFiles) -> SourceInfo:
    checkpoint_dir = files.dcp_dir if files.dcp_dir is not None else files.actor
    details: dict[str, Any] = {
        "actor": str(files.actor),
        "dcp_dir": str(files.dcp_dir) if files.dcp_dir else None,
        "full_weights": str(files.full_pt) if files.full_pt else None,
        "readers_available": [
            r for r, p in (("dcp", files.dcp_dir), ("full_weights.pt", files.full_pt)) if p
        ],
    }
    if files.explicit_pt and files.full_pt is not None:
        checkpoint_dir = files.full_pt
    return SourceInfo("fsdp", checkpoint_dir, files.reader, step_of(checkpoint_dir), details)


def _written_dtype(ctx: _Context) -> torch.dtype:
    return dominant_dtype({name: spec.dtype for name, spec in ctx.plan.tensors.items()})


def _lora_summary(ctx: _Context, request: ConvertRequest) -> dict[str, Any] | None:
    if ctx.settings is None:
        return None
    return {
        "mode": request.lora,
        "modules": len(ctx.plan.lora),
        "r": ctx.settings.r,
        "alpha": ctx.settings.alpha,
        "use_rslora": ctx.settings.use_rslora,
        "alpha_from": ctx.settings.origin,
        "target_modules": lora.target_modules(sorted(ctx.plan.lora_ranks)),
    }


def _write_adapter(ctx: _Context, staging: Path, request: ConvertRequest) -> Path:
    assert ctx.settings is not None
    pairs = sorted(ctx.plan.lora.values(), key=lambda pair: pair.module)
    loaded = ctx.source.load(sorted({key for pair in pairs for key in (pair.a_key, pair.b_key)}))
    tensors: dict[str, torch.Tensor] = {}
    for pair in pairs:
        for half, key in (("A", pair.a_key), ("B", pair.b_key)):
            tensor = loaded[key]
            dtype = ctx.target if ctx.target is not None and tensor.is_floating_point() else tensor.dtype
            tensors[lora.adapter_key(pair.module, half)] = tensor.to(dtype)
    modules = [pair.module for pair in pairs]
    config = lora.adapter_config(ctx.settings, modules, str(request.output.absolute()))
    config["rank_pattern"] = lora.rank_pattern(ctx.plan.lora_ranks, ctx.settings.r)
    return lora.write_adapter(staging / lora.ADAPTER_DIR, tensors, config)


def _report(
    ctx: _Context,
    source: SourceInfo,
    *,
    records: list[ShardRecord],
    adapter_dir: Path | None,
    request: ConvertRequest,
    seconds: float,
) -> WeightsReport:
    return WeightsReport(
        reader=source.reader,
        base_config=ctx.base_config,
        base_model_dir=ctx.base_dir,
        dtype=config_name(_written_dtype(ctx)),
        expected_shapes=ctx.arch.expected,
        shards=records,
        bytes_read=ctx.bytes_to_read(),
        layout={**ctx.source.layout, "reader": source.reader},
        warnings=ctx.warnings,
        adapter_dir=adapter_dir,
        extra={
            "tied_lm_head_dropped": ctx.plan.tied_head_dropped is not None,
            "lora": _lora_summary(ctx, request),
            "weights_seconds": round(seconds, 3),
            "stream_seconds": round(ctx.stream_seconds, 3),  # read + write + hash + fsync only
            "readers_available": source.details.get("readers_available"),
        },
    )
