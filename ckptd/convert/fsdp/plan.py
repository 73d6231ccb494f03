"""Pure planning: source tensor names/shapes + base architecture -> output tensors and shard plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ckptd.convert.dtypes import output_dtype
from ckptd.convert.fsdp.arch import Architecture
from ckptd.convert.fsdp.keys import (
    KeyMap,
    LoraPair,
    drop_tied_head,
    map_keys,
    natural_key,
    vocab_rows_to_trim,
)
from ckptd.convert.fsdp.source import TensorEntry
from ckptd.convert.writer import ShardPlan, TensorSpec, plan_shards
from ckptd.errors import ConversionError
from ckptd.verify.checks import check_keys


@dataclass(frozen=True)
class OutTensor:
    name: str
    src: str
    keep_rows: int | None  # vocab padding rows beyond config.vocab_size are cut
    lora: LoraPair | None  # merged into this weight (merge mode only)
    dtype: torch.dtype
    same_as: str | None = None  # a source key that must hold the same values (a dropped tied head)


@dataclass
class FsdpPlan:
    tensors: dict[str, OutTensor]
    shards: list[ShardPlan]
    lora: dict[str, LoraPair]  # every LoRA pair found, by target weight
    lora_ranks: dict[str, int]  # module -> r
    tied_head_dropped: str | None  # source key of the lm_head left out of a tied output
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes_out(self) -> int:
        return sum(shard.nbytes for shard in self.shards)

    def source_keys(self, name: str, merge: bool) -> list[str]:
        out = self.tensors[name]
        keys = [out.src] + ([out.same_as] if out.same_as else [])
        if merge and out.lora is not None:
            keys += [out.lora.a_key, out.lora.b_key]
        return keys


def _lora_ranks(lora: Mapping[str, LoraPair], entries: Mapping[str, TensorEntry]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for pair in lora.values():
        a_shape, b_shape = entries[pair.a_key].shape, entries[pair.b_key].shape
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise ConversionError(f"{pair.module}: LoRA A {a_shape} and B {b_shape} do not fit together")
        ranks[pair.module] = a_shape[0]
    return ranks


def _out_tensors(
    keymap: KeyMap,
    entries: Mapping[str, TensorEntry],
    arch: Architecture,
    target: torch.dtype | None,
    *,
    merge: bool,
    dropped: str | None,
) -> tuple[dict[str, OutTensor], dict[str, tuple[int, ...]], list[str]]:
    tensors: dict[str, OutTensor] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    warnings: list[str] = []
    for name, src in keymap.weights.items():
        entry = entries[src]
        keep = vocab_rows_to_trim(name, entry.shape, arch.expected)
        if keep is not None:
            warnings.append(f"{name}: {entry.shape[0] - keep} vocab padding rows beyond {keep} dropped")
        shapes[name] = (keep, *entry.shape[1:]) if keep is not None else entry.shape
        pair = keymap.lora.get(name) if merge else None
        same_as = dropped if dropped and name == "model.embed_tokens.weight" else None
        tensors[name] = OutTensor(name, src, keep, pair, output_dtype(name, entry.dtype, target), same_as)
    return tensors, shapes, warnings


def build_plan(
    entries: Mapping[str, TensorEntry],
    arch: Architecture,
    target: torch.dtype | None,
    *,
    merge: bool,
    max_shard_bytes: int,
    where: Path,
) -> FsdpPlan:
    keymap = map_keys(entries)
    if merge and arch.tied and "lm_head.weight" in keymap.lora:
        raise ConversionError(
            f"{where}: LoRA on lm_head of a tied-embedding model cannot be merged (embedding and head would "
            "differ); use --lora adapter"
        )
    dropped = drop_tied_head(keymap, arch.tied)
    tensors, shapes, warnings = _out_tensors(keymap, entries, arch, target, merge=merge, dropped=dropped)
    check_keys(shapes, arch.expected, where)
    orphans = sorted(set(keymap.lora) - set(tensors))
    if orphans:
        raise ConversionError(
            f"{where}: LoRA tensors for weights that are not in the checkpoint: {orphans[:5]}"
        )
    specs = [TensorSpec(name, shapes[name], tensors[name].dtype) for name in sorted(tensors, key=natural_key)]
    return FsdpPlan(
        tensors=tensors,
        shards=plan_shards(specs, max_shard_bytes),
        lora=keymap.lora,
        lora_ranks=_lora_ranks(keymap.lora, entries),
        tied_head_dropped=dropped,
        warnings=warnings,
    )


def batches(keys_per_tensor: list[list[str]], sizes: Mapping[str, int], limit: int) -> list[list[int]]:
    """Group output tensors (by index) so the source bytes read for one group stay under ``limit``."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, keys in enumerate(keys_per_tensor):
        need = sum(sizes[key] for key in keys)
        if current and size + need > limit:
            groups.append(current)
            current, size = [], 0
        current.append(index)
        size += need
    if current:
        groups.append(current)
    return groups
