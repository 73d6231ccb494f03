"""Assemble the non-weight parts of an HF output dir from the base model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ckptd.errors import ConfigError, ConversionError

# Weight and index files of the base model are never copied: the output has its own.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_SKIP_NAMES = {"config.json", "ckptd.json", "adapter_config.json", "adapter_model.safetensors"}


def read_json_object(
    path: Path, *, required_key: str, not_found: str, invalid: str, missing_key: str
) -> dict[str, Any]:
    """A JSON object that has ``required_key``; each failure is a one-line ConfigError naming ``path``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {not_found}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}){invalid}") from None
    if not isinstance(data, dict) or required_key not in data:
        raise ConfigError(f"{path}: {missing_key}")
    return data


def load_config(base_dir: Path) -> dict[str, Any]:
    return read_json_object(
        base_dir / "config.json",
        required_key="model_type",
        not_found="not found; --base-model must be a HuggingFace model dir",
        invalid="; fix or replace the base model",
        missing_key="no model_type; --base-model must be a HuggingFace model dir",
    )


def _is_asset(path: Path) -> bool:
    name = path.name
    if name in _SKIP_NAMES or name.endswith(_WEIGHT_SUFFIXES) or name.endswith(".index.json"):
        return False
    return not name.startswith(".")


def copy_assets(base_dir: Path, staging: Path) -> list[str]:
    """Copy tokenizer files, chat template, generation config and custom code (top level and subdirs)."""
    copied: list[str] = []
    for path in sorted(base_dir.rglob("*")):
        relative = path.relative_to(base_dir)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if not _is_asset(path):
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(str(relative))
    return copied


def write_config(staging: Path, base_config: dict[str, Any], dtype_name: str) -> dict[str, Any]:
    """config.json with the dtype key(s) the base used: ``torch_dtype`` (transformers 4) or ``dtype`` (5)."""
    config = dict(base_config)
    keys = [key for key in ("torch_dtype", "dtype") if key in config] or ["dtype"]
    for key in keys:
        config[key] = dtype_name
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def ensure_generation_config(staging: Path) -> bool:
    """Derive generation_config.json from config.json when the base model had none."""
    if (staging / "generation_config.json").exists():
        return False
    from transformers import AutoConfig, GenerationConfig

    try:
        config = AutoConfig.from_pretrained(staging)
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"{staging / 'config.json'}: transformers cannot load it ({exc})") from None
    GenerationConfig.from_model_config(config).save_pretrained(staging)
    return True
