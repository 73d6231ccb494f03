"""Qwen2-MoE: QKV bias, routed experts plus one gated shared expert."""

from __future__ import annotations

from ckptd.models.base import Architecture, attention, dense_mlp, moe_mlp

ARCHITECTURE = Architecture(
    "qwen2_moe", ("qwen2_moe",), (*attention(qkv_bias=True), *dense_mlp(), *moe_mlp(shared=True))
)
