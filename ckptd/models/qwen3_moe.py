"""Qwen3-MoE: q/k norm, routed experts only (no shared expert)."""

from __future__ import annotations

from ckptd.models.base import Architecture, attention, dense_mlp, moe_mlp

ARCHITECTURE = Architecture("qwen3_moe", ("qwen3_moe",), (*attention(qk_norm=True), *dense_mlp(), *moe_mlp()))
