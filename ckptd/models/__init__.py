"""Supported architectures: an explicit registry keyed by HF ``model_type``."""

from __future__ import annotations

from ckptd.errors import UnsupportedArchitectureError
from ckptd.models import llama, qwen2, qwen2_moe, qwen3, qwen3_moe
from ckptd.models.base import Architecture, Dims, Rule, dims_from_config, expected_shapes

ARCHITECTURES: tuple[Architecture, ...] = (
    qwen2.ARCHITECTURE,
    qwen3.ARCHITECTURE,
    llama.ARCHITECTURE,
    qwen2_moe.ARCHITECTURE,
    qwen3_moe.ARCHITECTURE,
)
REGISTRY: dict[str, Architecture] = {
    model_type: arch for arch in ARCHITECTURES for model_type in arch.model_types
}
_NOT_YET = {"deepseek_v2", "deepseek_v3", "kimi_k2"}


def architecture_for(model_type: str | None) -> Architecture:
    if model_type in REGISTRY:
        return REGISTRY[model_type]
    supported = ", ".join(sorted(REGISTRY))
    if model_type in _NOT_YET:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} (DeepSeek MLA) is not supported yet; supported: {supported}"
        )
    raise UnsupportedArchitectureError(f"unknown model_type {model_type!r}; supported: {supported}")


__all__ = [
    "ARCHITECTURES",
    "REGISTRY",
    "Architecture",
    "Dims",
    "Rule",
    "architecture_for",
    "dims_from_config",
    "expected_shapes",
]
