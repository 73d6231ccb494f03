"""Tiny real `transformers` models built from configs (no hub downloads), saved as base model dirs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from ckptd.demo_model import (
    CHAT_TEMPLATE,  # noqa: F401 (re-exported for tests)
    make_tokenizer,
)

_COMMON: dict[str, Any] = {
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# kind -> (model_type, overrides). Sizes are tiny but keep every structural quirk.
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("qwen2", {"tie_word_embeddings": False}),
    "qwen2_tied": ("qwen2", {"tie_word_embeddings": True}),
    # head_dim * heads (4*16=64) != hidden (32)
    "qwen3": ("qwen3", {"tie_word_embeddings": False, "head_dim": 16}),
    "qwen3_tied": ("qwen3", {"tie_word_embeddings": True, "head_dim": 16}),
    "llama": ("llama", {"tie_word_embeddings": False}),
    "mistral": ("mistral", {"tie_word_embeddings": False, "sliding_window": None}),
    "qwen2_moe": (
        "qwen2_moe",
        {
            "tie_word_embeddings": False,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 24,
            "shared_expert_intermediate_size": 40,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    ),
    "qwen3_moe": (
        "qwen3_moe",
        {
            "tie_word_embeddings": False,
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 24,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    ),
}


def tiny_config(kind: str, **overrides: Any) -> Any:
    model_type, extra = KINDS[kind]
    values = {**_COMMON, **extra, **overrides}
    config = AutoConfig.for_model(model_type, **values)
    config.dtype = overrides.get("dtype", "bfloat16")
    return config


def build_model(kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any) -> Any:
    """A randomly initialised model whose every tensor (norms too) is distinct, so swaps are caught."""
    config = tiny_config(kind, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.05
            param.copy_(noise + 1.0 if "norm" in name else noise)
    model.eval()
    return model.to(dtype)


def save_base_model(model: PreTrainedModel, directory: Path) -> Path:
    """Save like a hub model dir: config, generation config, weights, tokenizer and chat template."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    make_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return directory


def state_dict_of(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The HF-file view of a model's weights: tied lm_head dropped, fresh storage per tensor."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


def sample_input_ids(vocab_size: int, *, length: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab_size, (2, length), generator=generator)


def logits_of(model_dir_or_model: Path | PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    model = (
        AutoModelForCausalLM.from_pretrained(model_dir_or_model, dtype=torch.float32)
        if isinstance(model_dir_or_model, Path)
        else model_dir_or_model.float()
    )
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def read_config(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return data
