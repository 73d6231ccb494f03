"""Which FSDP files are on disk under a step/actor dir, and which reader to use (formats.md §1.2-§1.3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ckptd.convert.fsdp.fullpt import FULL_WEIGHTS_NAMES, is_complete_zip
from ckptd.convert.fsdp.source import METADATA_NAME
from ckptd.errors import ConversionError, IncompleteCheckpointError

_STEP = re.compile(r"^global_step_(\d+)$")


@dataclass(frozen=True)
class FsdpFiles:
    actor: Path
    dcp_dir: Path | None  # a dir holding .metadata (complete DCP)
    full_pt: Path | None
    explicit_pt: bool = False  # SRC was the .pt file itself

    @property
    def reader(self) -> str:
        return "dcp" if self.dcp_dir is not None else "full_weights.pt"


def step_of(path: Path) -> int | None:
    for part in reversed(path.parts):
        match = _STEP.match(part)
        if match:
            return int(match.group(1))
    return None


def _has_dcp(directory: Path) -> bool:
    return (directory / METADATA_NAME).is_file() or any(directory.glob("*.distcp"))


def _find_pt(actor: Path) -> Path | None:
    for name in FULL_WEIGHTS_NAMES:
        path = actor / "model_state_dict" / name
        if path.is_file():
            return path
    return None


def _actor_of(source: Path) -> tuple[Path, Path | None]:
    """(actor dir, DCP dir named directly by SRC or None)."""
    if source.name == "dcp_checkpoint" or (source.is_dir() and _has_dcp(source)):
        actor = source.parent if source.name == "dcp_checkpoint" else source
        return actor, source
    if (source / "actor").is_dir():
        return source / "actor", None
    if source.name == "model_state_dict":
        return source.parent, None
    return source, None


def _is_megatron(directory: Path) -> bool:
    """Megatron torch_dist iter dirs also hold .metadata + .distcp (formats.md §10): not ours."""
    markers = ("latest_checkpointed_iteration.txt", "common.pt", "metadata.json")
    return directory.name.startswith("iter_") or any((directory / m).exists() for m in markers)


def locate(source: Path) -> FsdpFiles | None:
    """The FSDP files for SRC, or None when SRC is not an FSDP checkpoint at all."""
    if source.is_dir() and _is_megatron(source):
        return None
    if source.is_file():
        if source.suffix != ".pt":
            return None
        actor = source.parent.parent if source.parent.name == "model_state_dict" else source.parent
        return FsdpFiles(actor, None, source, explicit_pt=True)
    actor, dcp_dir = _actor_of(source)
    if dcp_dir is None:
        for candidate in (actor / "dcp_checkpoint", actor):
            if candidate.is_dir() and _has_dcp(candidate):
                dcp_dir = candidate
                break
    full_pt = _find_pt(actor)
    if dcp_dir is None and full_pt is None:
        if (actor / "local_shard_checkpoint").is_dir():
            raise ConversionError(
                f"{actor / 'local_shard_checkpoint'}: per-rank local-shard FSDP checkpoints are unsupported; "
                "enable actor.fsdp_config.save_full_model_weights or keep the DCP checkpoint"
            )
        return None
    return _choose(actor, dcp_dir, full_pt)


def _choose(actor: Path, dcp_dir: Path | None, full_pt: Path | None) -> FsdpFiles:
    """Prefer a complete DCP (its .metadata is written atomically last); else a complete .pt."""
    if dcp_dir is not None and (dcp_dir / METADATA_NAME).is_file():
        return FsdpFiles(actor, dcp_dir, full_pt)
    if full_pt is not None and is_complete_zip(full_pt):
        return FsdpFiles(actor, None, full_pt)
    what = f"{dcp_dir} has no {METADATA_NAME}" if dcp_dir is not None else f"{full_pt} is not a complete zip"
    if full_pt is not None and dcp_dir is not None:
        what += f" and {full_pt} is not a complete zip"
    raise IncompleteCheckpointError(f"{actor}: FSDP checkpoint incomplete ({what}); still being written?")
