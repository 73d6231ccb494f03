"""Find the HF base model a checkpoint was trained from (shared by the FSDP and Megatron converters).

Order: an explicit ``request.base_model`` (``--base-model`` or the watch config), then what the trainer
left next to the checkpoint: the resolved run config ``tensorboard/<suffix>/config.yaml`` (``model_path``,
formats.md §1.1), then the old FSDP layout's ``actor/huggingface_model/`` or ``actor/model/`` (§1.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from ckptd.convert.api import ConvertRequest, SourceInfo
from ckptd.errors import ConfigError

log = structlog.get_logger("ckptd.convert")

_STEP_DIR = re.compile(r"^(global_step_\d+|best_model)$")
_MODEL_PATH_KEYS = (("actor", "model", "model_path"), ("rollout", "model", "model_path"), ("model_path",))
HOW_TO_GIVE = (
    "pass --base-model DIR (a HuggingFace model dir with config.json and tokenizer), set base_model in "
    "the [[watch]] config, or keep the trainer's tensorboard/<run>/config.yaml (model_path) beside the run"
)


def is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def step_dir_of(path: Path) -> Path | None:
    """The ``global_step_N`` (or ``best_model``) dir that ``path`` is in or under."""
    for candidate in (path, *path.parents):
        if _STEP_DIR.match(candidate.name):
            return candidate
    return None


def _config_candidates(step_dir: Path) -> Iterator[Path]:
    # <log_path>/<experiment>/checkpoints/global_step_N, config at <log_path>/tensorboard/<suffix>/ or
    # inside the experiment dir (reasoning runners put both under output_dir/experiment_name).
    experiment = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir.parent
    for root in (experiment, experiment.parent):
        yield from sorted(root.glob("tensorboard/*/config.yaml"))
        yield from sorted(root.glob("tensorboard/config.yaml"))
        yield from sorted(root.glob("config.yaml"))


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("base_model.config_unreadable", path=str(path), error=str(exc))
        return None
    return data if isinstance(data, dict) else None


def _experiment_name(config: Mapping[str, Any]) -> str | None:
    for section in ("runner", "logger"):
        node = config.get(section)
        if isinstance(node, Mapping):
            name = node.get("experiment_name") or (node.get("logger") or {}).get("experiment_name")
            if name:
                return str(name)
    return None


def find_trainer_config(checkpoint: Path) -> tuple[Path, dict[str, Any]] | None:
    """The run's resolved config.yaml; with several runs under one log path, the one naming ours."""
    step_dir = step_dir_of(checkpoint)
    if step_dir is None:
        return None
    experiment = step_dir.parent.parent.name if step_dir.parent.name == "checkpoints" else None
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in _config_candidates(step_dir):
        data = _read_yaml(path)
        if data is not None:
            found.append((path, data))
    for path, data in found:
        if experiment is not None and _experiment_name(data) == experiment:
            return path, data
    return found[0] if len(found) == 1 else None


def model_path_of(config: Mapping[str, Any]) -> str | None:
    for keys in _MODEL_PATH_KEYS:
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, str) and node and "${" not in node:
            return node
    return None


def _from_trainer(checkpoint: Path, tried: list[str]) -> Path | None:
    found = find_trainer_config(checkpoint)
    if found is None:
        return None
    path, config = found
    model_path = model_path_of(config)
    if model_path is None:
        tried.append(f"{path} has no model_path")
        return None
    candidate = Path(model_path)
    if is_hf_dir(candidate):
        log.info("base_model.from_trainer_config", config=str(path), base_model=str(candidate))
        return candidate
    tried.append(f"{path} names {model_path}, which is not an HF model dir on this host")
    return None


def _from_old_layout(checkpoint: Path) -> Path | None:
    step_dir = step_dir_of(checkpoint)
    actor = step_dir / "actor" if step_dir is not None else checkpoint
    for name in ("huggingface_model", "model"):
        if is_hf_dir(actor / name):
            return actor / name
    return None


def resolve_base_model(request: ConvertRequest, source: SourceInfo) -> Path:
    if request.base_model is not None:
        if not is_hf_dir(request.base_model):
            raise ConfigError(f"{request.base_model}: no config.json; --base-model must be an HF model dir")
        return request.base_model
    tried: list[str] = []
    found = _from_trainer(source.checkpoint_dir, tried) or _from_old_layout(source.checkpoint_dir)
    if found is not None:
        return found
    detail = f" ({'; '.join(tried)})" if tried else ""
    raise ConfigError(f"{source.checkpoint_dir}: no base model known{detail}; {HOW_TO_GIVE}")
