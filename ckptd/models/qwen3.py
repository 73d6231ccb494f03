"""Qwen3: GQA without bias, per-head q/k RMSNorm; heads·head_dim may differ from hidden."""

from __future__ import annotations

from ckptd.models.base import Architecture, attention, dense_mlp

ARCHITECTURE = Architecture("qwen3", ("qwen3",), (*attention(qk_norm=True), *dense_mlp()))
