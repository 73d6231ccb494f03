"""Llama-style decoders (Llama 2/3, Mistral): GQA without bias, dense SwiGLU MLP."""

from __future__ import annotations

from ckptd.models.base import Architecture, attention, dense_mlp

ARCHITECTURE = Architecture("llama", ("llama", "mistral"), (*attention(), *dense_mlp()))
