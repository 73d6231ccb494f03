"""Verify a staged HF output dir without loading tensor data (headers only)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from ckptd.convert.writer import INDEX_NAME
from ckptd.errors import ConversionError

_PEFT_KEY = re.compile(r"(\.lora_[AB]\.|\.lora_embedding_[AB]\.|\.base_layer\.|^base_model\.model\.)")
_DTYPE_BYTES = {
    "BF16": 2,
    "F16": 2,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass(frozen=True)
class VerifiedOutput:
    tensors: int
    tensor_bytes: int
    dtypes: dict[str, int]


def _first(items: list[str], count: int = 5) -> str:
    more = f" (+{len(items) - count} more)" if len(items) > count else ""
    return ", ".join(items[:count]) + more


def read_shapes(staging: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], int]:
    """Shapes and dtypes of every tensor in the index's shards; checks index/shard agreement."""
    index_path = staging / INDEX_NAME
    try:
        index = json.loads(index_path.read_text())
        weight_map: dict[str, str] = index["weight_map"]
        total_size = int(index["metadata"]["total_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{index_path}: missing or malformed index ({exc})") from None
    on_disk = {p.name for p in staging.glob("*.safetensors")}
    listed = set(weight_map.values())
    if on_disk != listed:
        raise ConversionError(
            f"{staging}: shard files {sorted(on_disk ^ listed)[:5]} are not both on disk and in the index"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for filename in sorted(listed):
        with safe_open(str(staging / filename), framework="pt") as handle:
            if (handle.metadata() or {}).get("format") != "pt":
                raise ConversionError(f"{staging / filename}: safetensors metadata lacks format=pt")
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                if weight_map.get(key) != filename:
                    raise ConversionError(f"{staging / filename}: tensor {key} is not indexed to this shard")
                tensor_slice = handle.get_slice(key)
                shapes[key] = tuple(tensor_slice.get_shape())
                dtypes[key] = tensor_slice.get_dtype()
    missing_from_shards = sorted(set(weight_map) - set(shapes))
    if missing_from_shards:
        raise ConversionError(
            f"{index_path}: indexed tensors absent from shards: {_first(missing_from_shards)}"
        )
    return shapes, dtypes, total_size


def _tensor_bytes(shape: tuple[int, ...], dtype: str) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * _DTYPE_BYTES.get(dtype, 0)


def check_keys(
    found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], where: Path
) -> None:
    peft_keys = sorted(k for k in found if _PEFT_KEY.search(k))
    if peft_keys:
        raise ConversionError(f"{where}: unmerged PEFT keys in a merged output: {_first(peft_keys)}")
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"{where}: keys do not fit the base architecture: missing [{_first(missing)}], "
            f"unexpected [{_first(unexpected)}]; check --base-model matches the trained model"
        )
    wrong = [
        f"{k} {found[k]}≠{expected[k]}" for k in sorted(expected) if tuple(found[k]) != tuple(expected[k])
    ]
    if wrong:
        raise ConversionError(f"{where}: shapes do not fit the base architecture: {_first(wrong)}")


def check_config_loads(staging: Path) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(staging)
    except Exception as exc:  # transformers raises many types here
        raise ConversionError(
            f"{staging / 'config.json'}: transformers AutoConfig cannot load it: {exc}"
        ) from None


def verify_output(staging: Path, expected: Mapping[str, tuple[int, ...]]) -> VerifiedOutput:
    shapes, dtypes, total_size = read_shapes(staging)
    check_keys(shapes, expected, staging)
    actual_bytes = sum(_tensor_bytes(shapes[k], dtypes[k]) for k in shapes)
    if actual_bytes != total_size:
        raise ConversionError(
            f"{staging / INDEX_NAME}: total_size {total_size} but shards hold {actual_bytes}"
        )
    check_config_loads(staging)
    counts: dict[str, int] = {}
    for dtype in dtypes.values():
        counts[dtype] = counts.get(dtype, 0) + 1
    return VerifiedOutput(tensors=len(shapes), tensor_bytes=actual_bytes, dtypes=counts)
