"""Pure cross-checks between the stored Megatron args, the base model's config and the files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ckptd.convert.megatron.layout import Sizes
from ckptd.errors import ConversionError
from ckptd.models.base import Dims


def _stored(args: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_args(args: Mapping[str, Any], dims: Dims, sizes: Sizes) -> None:
    """Every size the args store must equal the base config's; a mismatch names both sides."""
    pairs: list[tuple[tuple[str, ...], int, str]] = [
        (("hidden_size",), dims.hidden, "hidden_size"),
        (("num_attention_heads",), dims.heads, "num_attention_heads"),
        (("kv_channels",), dims.head_dim, "head_dim"),
    ]
    if args.get("group_query_attention"):
        pairs.append((("num_query_groups",), dims.groups, "num_key_value_heads"))
    if dims.experts:
        pairs.append((("moe_ffn_hidden_size",), dims.moe_ffn, "moe_intermediate_size"))
    elif sizes.experts:
        raise ConversionError(f"args say num_experts={sizes.experts}, but config.json has no experts")
    else:
        pairs.append((("ffn_hidden_size",), dims.ffn, "intermediate_size"))
    if dims.experts and sizes.experts and dims.experts != sizes.experts:
        raise ConversionError(f"args num_experts={sizes.experts} but config.json num_experts={dims.experts}")
    for keys, expected, config_key in pairs:
        value = _stored(args, *keys)
        if value is not None and value != expected:
            raise ConversionError(
                f"checkpoint args {keys[0]}={value} but base config.json {config_key}={expected}: "
                "--base-model is not the model that was trained"
            )
    untie = args.get("untie_embeddings_and_output_weights")
    if isinstance(untie, bool) and untie == dims.tied:
        raise ConversionError(
            f"checkpoint args untie_embeddings_and_output_weights={untie} but base config.json "
            f"tie_word_embeddings={dims.tied}"
        )
    if sizes.experts and sizes.experts % sizes.ep:
        raise ConversionError(f"{sizes.experts} experts do not split over expert_parallel={sizes.ep}")


def dtype_warnings(sources: set[torch.dtype], target: torch.dtype | None) -> list[str]:
    if target is not None and torch.float16 in sources and target == torch.bfloat16:
        return ["weights were stored as float16; casting to bfloat16 loses precision (use --dtype keep)"]
    return []


def vocab_warning(rows: int, vocab: int) -> list[str]:
    if rows < vocab:
        return [
            f"checkpoint holds {rows} vocab rows, fewer than config vocab_size={vocab}: zero rows appended"
        ]
    return []
