"""Sharded safetensors writer shared by every converter.

Converters first describe every output tensor (name, shape, output dtype), get a shard plan, then
hand the writer one shard's tensors at a time. Each shard is written to a temp name, fsynced, hashed
and renamed, and recorded in a progress file so a restarted job keeps shards it already verified.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ckptd.convert.safetensors_stream import write_safetensors
from ckptd.errors import ConversionError

INDEX_NAME = "model.safetensors.index.json"
PROGRESS_NAME = ".ckptd-shards.json"
_HASH_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.dtype)


def tensor_nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


@dataclass(frozen=True)
class ShardPlan:
    index: int  # 1-based
    total: int
    tensors: tuple[TensorSpec, ...]

    @property
    def filename(self) -> str:
        return f"model-{self.index:05d}-of-{self.total:05d}.safetensors"

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.tensors)


@dataclass(frozen=True)
class ShardRecord:
    filename: str
    sha256: str
    file_bytes: int
    tensor_bytes: int
    tensors: tuple[str, ...]


def plan_shards(specs: Iterable[TensorSpec], max_shard_bytes: int) -> list[ShardPlan]:
    """Greedy packing in the given order; a tensor larger than the limit gets a shard of its own."""
    groups: list[list[TensorSpec]] = []
    current: list[TensorSpec] = []
    size = 0
    for spec in specs:
        if current and size + spec.nbytes > max_shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(spec)
        size += spec.nbytes
    if current:
        groups.append(current)
    return [ShardPlan(i + 1, len(groups), tuple(group)) for i, group in enumerate(groups)]


def plan_fingerprint(plan: Sequence[ShardPlan]) -> str:
    text = json.dumps(
        [[s.filename, [[t.name, list(t.shape), str(t.dtype)] for t in s.tensors]] for s in plan]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare(
    spec_by_name: Mapping[str, TensorSpec], tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Check names/shapes against the plan and cast. Views and shared storage are fine: the stream
    writer copies each tensor's own bytes, so tied or sliced tensors are never written twice or whole."""
    if set(tensors) != set(spec_by_name):
        missing = sorted(set(spec_by_name) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(spec_by_name))[:5]
        raise ConversionError(f"shard content differs from its plan: missing {missing}, unexpected {extra}")
    out: dict[str, torch.Tensor] = {}
    for name, spec in spec_by_name.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != spec.shape:
            raise ConversionError(f"{name}: shape {tuple(tensor.shape)} differs from planned {spec.shape}")
        out[name] = tensor.to(device="cpu", dtype=spec.dtype).contiguous()
    return out


class ShardedWriter:
    """Writes the shards of one plan into ``staging``; safe to call ``write`` from several threads."""

    def __init__(self, staging: Path, plan: Sequence[ShardPlan]) -> None:
        self.staging = staging
        self.plan = list(plan)
        self.fingerprint = plan_fingerprint(self.plan)
        self._lock = threading.Lock()
        self._records: dict[str, ShardRecord] = self._resume()

    def _resume(self) -> dict[str, ShardRecord]:
        """Keep shards a previous attempt finished for the same plan and whose bytes still hash right."""
        progress = self.staging / PROGRESS_NAME
        if not progress.exists():
            return {}
        try:
            data = json.loads(progress.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("fingerprint") != self.fingerprint:
            return {}
        kept: dict[str, ShardRecord] = {}
        for raw in data.get("shards", []):
            record = ShardRecord(**{**raw, "tensors": tuple(raw["tensors"])})
            path = self.staging / record.filename
            if path.is_file() and sha256_file(path) == record.sha256:
                kept[record.filename] = record
        return kept

    @property
    def resumed(self) -> list[str]:
        return sorted(self._records)

    def pending(self) -> list[ShardPlan]:
        return [shard for shard in self.plan if shard.filename not in self._records]

    def write(self, shard: ShardPlan, tensors: Mapping[str, torch.Tensor]) -> ShardRecord:
        prepared = _prepare({spec.name: spec for spec in shard.tensors}, tensors)
        temp = self.temp_path(shard)
        digest = write_safetensors(temp, prepared, {"format": "pt"})
        del prepared
        _fsync_path(temp)
        return self.commit(shard, temp, digest)

    def temp_path(self, shard: ShardPlan) -> Path:
        return self.staging / f".{shard.filename}.tmp"

    def commit(self, shard: ShardPlan, temp: Path, sha256: str) -> ShardRecord:
        """Record a fully written and fsynced temp file as ``shard`` and give it its final name."""
        record = ShardRecord(
            filename=shard.filename,
            sha256=sha256,
            file_bytes=temp.stat().st_size,
            tensor_bytes=shard.nbytes,
            tensors=tuple(spec.name for spec in shard.tensors),
        )
        temp.rename(self.staging / shard.filename)
        with self._lock:
            self._records[shard.filename] = record
            self._save_progress()
        return record

    def _save_progress(self) -> None:
        payload = {
            "fingerprint": self.fingerprint,
            "shards": [
                {**record.__dict__, "tensors": list(record.tensors)} for record in self._records.values()
            ],
        }
        temp = self.staging / f"{PROGRESS_NAME}.tmp"
        temp.write_text(json.dumps(payload))
        temp.replace(self.staging / PROGRESS_NAME)

    def write_all(
        self,
        produce: Callable[[ShardPlan], Mapping[str, torch.Tensor]],
        *,
        threads: int = 1,
        on_shard: Callable[[ShardRecord], None] | None = None,
    ) -> None:
        """Produce and write every pending shard, ``threads`` at a time (memory ≈ threads × shard)."""

        def one(shard: ShardPlan) -> None:
            record = self.write(shard, produce(shard))
            if on_shard is not None:
                on_shard(record)

        pending = self.pending()
        if threads <= 1 or len(pending) <= 1:
            for shard in pending:
                one(shard)
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ckptd-shard") as pool:
            for future in [pool.submit(one, shard) for shard in pending]:
                future.result()

    def finish(self) -> list[ShardRecord]:
        """Write the index once every shard is on disk; return the records in plan order."""
        missing = [shard.filename for shard in self.pending()]
        if missing:
            raise ConversionError(f"cannot write the index: shards not written: {missing[:5]}")
        records = [self._records[shard.filename] for shard in self.plan]
        weight_map = {name: record.filename for record in records for name in record.tensors}
        index = {
            "metadata": {"total_size": sum(record.tensor_bytes for record in records)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (self.staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return records
