"""What the base architecture expects: every HF file key and its shape, from the config alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ckptd.errors import UnsupportedArchitectureError
from ckptd.models import REGISTRY, dims_from_config, expected_shapes

_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class Architecture:
    model_type: str
    tied: bool
    vocab_size: int | None
    expected: dict[str, tuple[int, ...]]  # HF file names; no lm_head.weight when tied


def is_moe(config: dict[str, Any]) -> bool:
    return any(isinstance(config.get(key), int) and config[key] > 0 for key in _MOE_KEYS)


def load_architecture(base_dir: Path, config: dict[str, Any]) -> Architecture:
    """Expected keys/shapes: ckptd's name tables when they know the type, else the meta-device model."""
    model_type = str(config.get("model_type"))
    if is_moe(config):
        # transformers 5 fuses experts in memory (experts.gate_up_proj) while files keep per-expert
        # keys, so an FSDP state dict of a MoE model needs a name/split table we do not have yet.
        raise UnsupportedArchitectureError(
            f"{base_dir}: {model_type} is a mixture-of-experts model; FSDP MoE checkpoints are not "
            "supported yet (dense qwen2, qwen3, llama, mistral are)"
        )
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(base_dir)
    except (ValueError, KeyError, OSError, ImportError) as exc:
        raise UnsupportedArchitectureError(
            f"{base_dir}: transformers cannot read {model_type} ({' '.join(str(exc).split())[:200]})"
        ) from None
    if model_type in REGISTRY:
        # Same contract as the Megatron converter, and no import of the modeling code (seconds).
        dims = dims_from_config(hf_config.to_dict())
        expected = expected_shapes(REGISTRY[model_type], dims)
        return Architecture(model_type, dims.tied, dims.vocab, expected)
    return meta_architecture(base_dir, hf_config)


def meta_architecture(base_dir: Path, hf_config: Any) -> Architecture:
    """Instantiate the model on the meta device (no memory) and read its state_dict shapes."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
    except (ValueError, KeyError, OSError, ImportError) as exc:
        raise UnsupportedArchitectureError(
            f"{base_dir}: transformers cannot build {hf_config.model_type} "
            f"({' '.join(str(exc).split())[:200]})"
        ) from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    output = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    tied = output is not None and embed is not None and output.weight is embed.weight
    if tied:
        expected.pop("lm_head.weight", None)
    vocab = getattr(hf_config.get_text_config(), "vocab_size", None)
    return Architecture(str(hf_config.model_type), tied, vocab, expected)
