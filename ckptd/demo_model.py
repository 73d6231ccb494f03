"""A tiny Qwen2 base model and RLinf-style FSDP checkpoints, built locally (no hub downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with a chat template, enough for transformers to load and apply."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_base_model(directory: Path, *, seed: int = 0, hidden: int = 64, layers: int = 4) -> Any:
    """Save a small tied-embedding Qwen2 (config, bf16 weights, tokenizer) and return the model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.save_pretrained(directory)
    make_tokenizer(config.vocab_size).save_pretrained(directory)
    return model


def trained_state(model: Any, step: int) -> dict[str, torch.Tensor]:
    """The model's weights after a pretend training step: each step moves every tensor a little."""
    generator = torch.Generator().manual_seed(step)
    state = {
        name: (tensor.float() + 0.01 * torch.randn(tensor.shape, generator=generator)).to(tensor.dtype)
        for name, tensor in model.named_parameters()
    }
    if model.config.tie_word_embeddings:  # the trainer saves both names, as equal separate tensors
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    return state


def write_fsdp_step(
    step_dir: Path, state: dict[str, torch.Tensor], *, adam: bool = True, full_weights: bool = True
) -> None:
    """Write ``actor/`` as an RLinf FSDP trainer does: DCP (model + Adam state), then full_weights.pt."""
    from torch.distributed.checkpoint import state_dict_saver

    actor = step_dir / "actor"
    optimizer = {
        f"state.{name}.{key}": torch.zeros(t.shape, dtype=torch.float32)
        if key != "step"
        else torch.tensor(1.0)
        for name, t in state.items()
        for key in ("exp_avg", "exp_avg_sq", "step")
        if adam
    }
    payload = {"fsdp_checkpoint": {"model": dict(state), "optimizers": optimizer, "fsdp_version": "fsdp2"}}
    state_dict_saver.save(payload, checkpoint_id=str(actor / "dcp_checkpoint"), no_dist=True)
    if not full_weights:
        return
    (actor / "model_state_dict").mkdir(parents=True, exist_ok=True)
    torch.save(state, actor / "model_state_dict" / "full_weights.pt")
