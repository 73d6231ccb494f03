"""Legacy Megatron (TP/PP/VPP/EP ``mp_rank_*`` files) → HF safetensors in one streaming pass.

Every rank file is loaded once, mmapped (planning reads only the pickles). Shards are cut by layer
and produced by a bounded thread pool; each source tensor is read once, merged, and its pages are
released right away, so memory follows the shards in flight, not the checkpoint size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch

from ckptd.convert import dtypes, hfdir
from ckptd.convert.api import ConvertHooks, ConvertRequest, SourceInfo, WeightsReport
from ckptd.convert.megatron import checks, layout, reader
from ckptd.convert.megatron.merge import merge
from ckptd.convert.megatron.plan import Index, Item, Piece, build_items, shard_items
from ckptd.convert.megatron.stream import SHARD_MEMORY_FACTOR, write_shards
from ckptd.convert.writer import ShardedWriter, ShardPlan
from ckptd.errors import ConfigError, ConversionError
from ckptd.models import Architecture, Dims, architecture_for, dims_from_config, expected_shapes

log = structlog.get_logger("ckptd.convert")

MEMORY_ENV = "CKPTD_CONVERT_MEMORY_MB"
DEFAULT_MEMORY_MB = 384


@dataclass
class Job:
    located: reader.Located
    files: reader.RankFiles
    base_dir: Path
    base_config: dict[str, Any]
    arch: Architecture
    dims: Dims
    layout: layout.Layout
    items: list[Item]
    shards: list[ShardPlan]
    by_file: dict[str, list[Item]]
    bytes_read: int
    threads: int
    memory_budget: int
    max_shard_bytes: int
    dtype_name: str
    warnings: list[str] = field(default_factory=list)

    def layout_json(self) -> dict[str, Any]:
        return {
            **self.layout.to_json(),
            "iteration": self.located.iteration,
            "iter_dir": self.located.iter_dir.name,
        }


def _memory_budget(explicit: int | None) -> int:
    if explicit is not None:
        return explicit
    raw = os.environ.get(MEMORY_ENV, str(DEFAULT_MEMORY_MB))
    try:
        return int(raw) * 1024 * 1024
    except ValueError:
        raise ConfigError(f"{MEMORY_ENV}={raw!r}: expected a number of MiB") from None


def _base_dir(request: ConvertRequest, source: SourceInfo) -> Path:
    from ckptd.convert.base_model import resolve_base_model

    return resolve_base_model(request, source)


def _resolved_config(base_dir: Path) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        resolved: dict[str, Any] = AutoConfig.from_pretrained(base_dir).to_dict()
    except Exception as exc:  # transformers raises many types here
        raise ConfigError(f"{base_dir / 'config.json'}: transformers cannot load it ({exc})") from None
    return resolved


def _scan(located: reader.Located, files: reader.RankFiles) -> tuple[dict[str, Any], Index]:
    """Args from the first rank file, and every file's tensor names/shapes (no tensor data read)."""
    index = {folder: reader.tensor_index(files.chunks(folder)) for folder in located.folders}
    return files.args(located.folders[0]), index


def _extra_state_warnings(index: Index) -> list[str]:
    kinds = {
        meta: key
        for chunks in index.values()
        for entries in chunks.values()
        for key, meta in entries.items()
        if key.endswith("_extra_state") and meta != "empty"
    }
    if "fp8" in kinds:
        return [f"Transformer Engine FP8 state found (e.g. {kinds['fp8']}): the model was trained with FP8"]
    return [f"unrecognised _extra_state value {kind} at {key}" for kind, key in kinds.items()]


def _infer_layout(located: reader.Located, args: dict[str, Any], index: Index, dims: Dims) -> layout.Layout:
    sizes = layout.sizes_from(args, located.folders)
    files = layout.check_complete(sizes, set(located.folders), str(located.iter_dir))
    unexpected = sorted(set(located.folders) - set(files.values()))
    if unexpected:
        raise ConversionError(
            f"{located.iter_dir}: rank folder(s) {unexpected[:4]} do not belong to the layout the args "
            f"describe (tp={sizes.tp} pp={sizes.pp} ep={sizes.ep}); stale files from another run?"
        )
    stage_keys: dict[tuple[int, str], list[str]] = {}
    for pp in range(sizes.pp):
        first = min((ep, name) for (tp, p, ep), name in files.items() if tp == 0 and p == pp)[1]
        for chunk, entries in index[first].items():
            stage_keys[(pp, chunk)] = list(entries)
    found = layout.build_layout(sizes, files, stage_keys, args, dims.layers)
    checks.check_args(args, dims, sizes)
    return found


def _shape(index: Index, piece: Piece) -> tuple[int, ...]:
    meta = index[piece.folder][piece.chunk][piece.key]
    assert isinstance(meta, tuple)
    return meta[0]


def _source_bytes(items: list[Item], index: Index) -> int:
    total = 0
    for item in items:
        for piece in (*item.pieces, *item.same_as):
            count = 1
            for dim in _shape(index, piece):
                count *= dim
            total += count * item.dtype.itemsize
    return total


def prepare(source: SourceInfo, request: ConvertRequest, memory_budget: int | None = None) -> Job:
    located = reader.locate(source.checkpoint_dir)
    base_dir = _base_dir(request, source)
    base_config = hfdir.load_config(base_dir)
    arch = architecture_for(base_config.get("model_type"))
    dims = dims_from_config(_resolved_config(base_dir))
    files = reader.RankFiles(located.iter_dir)
    args, index = _scan(located, files)
    found = _infer_layout(located, args, index, dims)
    items = build_items(arch, found, index, dims)
    target = dtypes.resolve_target(request.dtype, base_config)
    out_dtype = {name: dtypes.output_dtype(name, item.dtype, target) for item in items for name in item.hf}
    threads = max(1, min(request.threads, os.cpu_count() or 1))
    budget = _memory_budget(memory_budget)
    shard_cap = min(request.max_shard_bytes, budget // (SHARD_MEMORY_FACTOR * threads))
    shards, by_file = shard_items(items, shard_cap, out_dtype)
    embed_rows = sum(_shape(index, p)[0] for p in items[0].pieces)
    warnings = [
        *_extra_state_warnings(index),
        *checks.dtype_warnings({item.dtype for item in items}, target),
        *checks.vocab_warning(embed_rows, dims.vocab),
    ]
    return Job(
        located=located,
        files=files,
        base_dir=base_dir,
        base_config=base_config,
        arch=arch,
        dims=dims,
        layout=found,
        items=items,
        shards=shards,
        by_file=by_file,
        bytes_read=_source_bytes(items, index),
        threads=threads,
        memory_budget=budget,
        max_shard_bytes=shard_cap,
        dtype_name=dtypes.config_name(dtypes.dominant_dtype(out_dtype)),
        warnings=warnings,
    )


def produce(job: Job, shard: ShardPlan) -> dict[str, torch.Tensor]:
    """Merge this shard's pieces from the shared mmapped rank files, letting each item's pages go."""
    out: dict[str, torch.Tensor] = {}
    for item in job.by_file[shard.filename]:
        pieces = [_tensor(job.files, p) for p in item.pieces]
        for mine, piece in zip(pieces, item.same_as, strict=False):
            _check_tied_copy(job, mine, piece)
        out.update(zip(item.hf, merge(item.merge, pieces, job.dims), strict=True))
        reader.release_pages(pieces)
    return out


def _check_tied_copy(job: Job, embedding: torch.Tensor, piece: Piece) -> None:
    copy = _tensor(job.files, piece)
    if not torch.equal(embedding, copy):
        raise ConversionError(
            f"{job.located.iter_dir / piece.folder}: {piece.key} differs from the tied embedding; "
            "the model is not tied as config.json says"
        )
    reader.release_pages([copy])


def _tensor(files: reader.RankFiles, piece: Piece) -> torch.Tensor:
    value = files.chunks(piece.folder)[piece.chunk].get(piece.key)
    if not isinstance(value, torch.Tensor):
        raise ConversionError(f"{piece.folder}[{piece.chunk}] {piece.key}: changed on disk since planning")
    return value


def describe(job: Job, source: SourceInfo) -> dict[str, Any]:
    return {
        "format": source.format,
        "source": str(job.located.actor_dir),
        "step": job.located.iteration,
        "base_model": str(job.base_dir),
        "model_type": job.base_config.get("model_type"),
        "architecture": job.arch.name,
        "layout": job.layout_json(),
        "dtype": job.dtype_name,
        "tensors": sum(len(s.tensors) for s in job.shards),
        "bytes_to_read": job.bytes_read,
        "bytes_to_write": sum(s.nbytes for s in job.shards),
        "threads": job.threads,
        "memory_budget_bytes": job.memory_budget,
        "max_shard_bytes": job.max_shard_bytes,
        "shards": [
            {"file": s.filename, "tensors": len(s.tensors), "bytes": s.nbytes, "first": s.tensors[0].name}
            for s in job.shards
        ],
        "warnings": job.warnings,
    }


class MegatronConverter:
    name = "megatron"

    def __init__(self, memory_budget_bytes: int | None = None) -> None:
        self.memory_budget_bytes = memory_budget_bytes

    def probe(self, source: Path) -> SourceInfo | None:
        actor = reader.actor_dir_of(source)
        if actor is None:
            return None
        tracker = actor / reader.TRACKER
        text = tracker.read_text().strip() if tracker.is_file() else ""
        step = int(text) if text.isdigit() else None
        return SourceInfo(format="megatron", checkpoint_dir=actor, reader="megatron_legacy", step=step)

    def plan(self, source: SourceInfo, request: ConvertRequest) -> dict[str, Any]:
        return describe(prepare(source, request, self._budget(request)), source)

    def _budget(self, request: ConvertRequest) -> int | None:
        return self.memory_budget_bytes or request.memory_budget_bytes

    def write_weights(
        self, source: SourceInfo, request: ConvertRequest, staging: Path, hooks: ConvertHooks
    ) -> WeightsReport:
        job = prepare(source, request, self._budget(request))
        writer = ShardedWriter(staging, job.shards)
        total = sum(s.nbytes for s in job.shards)
        resumed = writer.resumed
        done = [sum(s.nbytes for s in job.shards if s.filename in set(resumed))]
        log.info("megatron.plan", layout=job.layout_json(), shards=len(job.shards), resumed=len(resumed))

        def one(shard: ShardPlan) -> dict[str, torch.Tensor]:
            hooks.check_alive()
            return produce(job, shard)

        def on_shard(record: Any) -> None:
            reader.return_freed_memory()
            done[0] += record.tensor_bytes
            hooks.progress(done[0], total)

        write_shards(writer, one, threads=job.threads, memory_budget=job.memory_budget, on_shard=on_shard)
        return WeightsReport(
            reader="megatron_legacy",
            base_config=job.base_config,
            base_model_dir=job.base_dir,
            dtype=job.dtype_name,
            expected_shapes=expected_shapes(job.arch, job.dims),
            shards=writer.finish(),
            bytes_read=job.bytes_read,
            layout=job.layout_json(),
            warnings=job.warnings,
            extra={"resumed_shards": resumed},
        )
