"""Output dtype policy: pure functions shared by every converter."""

from __future__ import annotations

from typing import Any

import torch

from ckptd.errors import ConfigError

TARGETS: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
CONFIG_NAMES: dict[torch.dtype, str] = {
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
}
# Tensors that must stay fp32 whatever the target (pitfalls.md 5).
FP32_ONLY_SUFFIXES = ("expert_bias", "e_score_correction_bias")


def resolve_target(requested: str | None, base_config: dict[str, Any]) -> torch.dtype | None:
    """The dtype to cast floating tensors to, or None to keep what the checkpoint holds."""
    if requested is None:
        requested = base_config.get("torch_dtype") or base_config.get("dtype") or "keep"
    assert requested is not None
    if requested in ("keep", "auto", "none", ""):
        return None
    try:
        return TARGETS[requested]
    except KeyError:
        raise ConfigError(f"dtype: unknown value {requested!r}; use one of keep, bf16, fp16, fp32") from None


def output_dtype(name: str, source: torch.dtype, target: torch.dtype | None) -> torch.dtype:
    if target is None or not source.is_floating_point:
        return source
    if name.endswith(FP32_ONLY_SUFFIXES):
        return torch.float32
    return target


def config_name(dtype: torch.dtype) -> str:
    return CONFIG_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def dominant_dtype(dtypes: dict[str, torch.dtype]) -> torch.dtype:
    """The dtype holding most tensors' floating weights, for config.json's torch_dtype."""
    counts: dict[torch.dtype, int] = {}
    for dtype in dtypes.values():
        if dtype.is_floating_point:
            counts[dtype] = counts.get(dtype, 0) + 1
    if not counts:
        return torch.float32
    return max(counts, key=lambda d: counts[d])
