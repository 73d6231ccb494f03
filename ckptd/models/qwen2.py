"""Qwen2 / Qwen2.5: GQA with a bias on the fused QKV, dense SwiGLU MLP."""

from __future__ import annotations

from ckptd.models.base import Architecture, attention, dense_mlp

ARCHITECTURE = Architecture("qwen2", ("qwen2",), (*attention(qkv_bias=True), *dense_mlp()))
