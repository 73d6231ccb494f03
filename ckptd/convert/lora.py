"""LoRA: where r and alpha come from, the fp32 merge, and PEFT adapter output (formats.md §2.5).

The settings and math are pure; :func:`write_adapter` is the only function that touches the disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from safetensors.torch import save_file

from ckptd.convert.hfdir import read_json_object
from ckptd.errors import ConversionError

log = structlog.get_logger("ckptd.convert")

ADAPTER_DIR = "lora_adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoraSettings:
    r: int  # the rank most modules have; each pair's own r comes from its tensors
    alpha: float
    use_rslora: bool
    origin: str  # where alpha came from, for the manifest
    base_config: dict[str, Any]  # an adapter_config.json to start from (may be empty)

    def scale(self, r: int) -> float:
        """PEFT's scaling: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        return self.alpha / math.sqrt(r) if self.use_rslora else self.alpha / r


def read_adapter_config(path: Path) -> dict[str, Any]:
    return read_json_object(
        path / ADAPTER_CONFIG if path.is_dir() else path,
        required_key="lora_alpha",
        not_found="--lora-config must be a PEFT adapter_config.json or its dir",
        invalid="",
        missing_key="no lora_alpha; not a PEFT LoRA adapter_config.json",
    )


def trainer_lora_config(trainer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """alpha/r from an RLinf run config: ``actor.model.{lora_alpha, lora_path, is_lora, lora_rank}``."""
    model = ((trainer or {}).get("actor") or {}).get("model") or {}
    if not isinstance(model, Mapping) or not model.get("is_lora"):
        return None
    if model.get("lora_alpha") is not None:
        return {"lora_alpha": model["lora_alpha"], "r": model.get("lora_rank"), "origin": "trainer config"}
    lora_path = model.get("lora_path")
    if lora_path and (Path(str(lora_path)) / ADAPTER_CONFIG).is_file():
        data = read_adapter_config(Path(str(lora_path)))
        return {**data, "origin": f"trainer lora_path {lora_path}"}
    if model.get("lora_rank") is not None:
        # A fresh RLinf LoRA is built with alpha = r (formats.md §2.5).
        rank = model["lora_rank"]
        return {"lora_alpha": rank, "r": rank, "origin": "trainer config (fresh RLinf LoRA: alpha = r)"}
    return None


def resolve_settings(
    ranks: Mapping[str, int], given: dict[str, Any] | None, trainer: dict[str, Any] | None
) -> tuple[LoraSettings, list[str]]:
    """r from the tensors; alpha from --lora-config, else the trainer config, else alpha = r (warned)."""
    if not ranks:
        raise ConversionError("no LoRA tensors found")
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    warnings: list[str] = []
    source = given if given is not None else trainer
    if source is None:
        message = f"LoRA alpha unknown (no --lora-config, no trainer config): assuming alpha = r = {r}"
        log.warning("lora.alpha_assumed", r=r)
        return LoraSettings(r, float(r), False, "assumed alpha = r", {}), [message]
    origin = "--lora-config" if given is not None else str(source.get("origin", "trainer config"))
    stated_r = source.get("r")
    if stated_r is not None and int(stated_r) != r:
        warnings.append(f"{origin} says r = {stated_r} but the tensors have r = {r}; using the tensors")
    alpha = float(source["lora_alpha"])
    if alpha <= 0:
        raise ConversionError(f"{origin}: lora_alpha = {alpha}; the adapter would be a no-op (pitfalls.md 1)")
    config = {k: v for k, v in source.items() if k != "origin"}
    return LoraSettings(r, alpha, bool(source.get("use_rslora", False)), origin, config), warnings


def merge(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``W + scale·(B·A)`` computed in fp32 (the caller casts once, afterwards)."""
    if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(weight.shape):
        raise ConversionError(
            f"LoRA shapes do not fit: W {tuple(weight.shape)}, A {tuple(a.shape)}, B {tuple(b.shape)}"
        )
    merged = weight.to(torch.float32, copy=True)
    merged.addmm_(b.to(torch.float32), a.to(torch.float32), alpha=scale)
    return merged


def adapter_key(module: str, half: str) -> str:
    """PEFT file name of a LoRA tensor: the ``.default`` adapter name is dropped (§2.5)."""
    return f"base_model.model.{module}.lora_{half}.weight"


def target_modules(modules: list[str]) -> list[str]:
    return sorted({module.rsplit(".", 1)[-1] for module in modules})


def adapter_config(settings: LoraSettings, modules: list[str], base_path: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        **settings.base_config,
    }
    config.update(
        r=settings.r,
        lora_alpha=settings.alpha,
        use_rslora=settings.use_rslora,
        target_modules=target_modules(modules),
        base_model_name_or_path=base_path,
        inference_mode=True,
    )
    for key in ("rank_pattern", "alpha_pattern"):
        config.setdefault(key, {})
    return config


def rank_pattern(ranks: Mapping[str, int], r: int) -> dict[str, int]:
    """Modules whose rank differs from the common one, in PEFT's rank_pattern form."""
    return {module: rank for module, rank in sorted(ranks.items()) if rank != r}


def write_adapter(directory: Path, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    own = {name: tensor.contiguous().clone() for name, tensor in tensors.items()}
    save_file(own, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (directory / ADAPTER_CONFIG).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return directory
