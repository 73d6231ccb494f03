"""The explicit list of format converters and format detection."""

from __future__ import annotations

from pathlib import Path

from ckptd.convert.api import Converter, SourceInfo
from ckptd.errors import ConversionError, SourceRemovedError


def converters() -> list[Converter]:
    # Imported here so `ckptd status` does not pay for torch.distributed imports.
    from ckptd.convert.fsdp.converter import FsdpConverter
    from ckptd.convert.megatron.converter import MegatronConverter

    return [FsdpConverter(), MegatronConverter()]


def get_converter(name: str) -> Converter:
    for converter in converters():
        if converter.name == name:
            return converter
    raise ConversionError(f"unknown checkpoint format {name!r}; known: fsdp, megatron")


def detect(source: Path) -> tuple[Converter, SourceInfo]:
    if not source.exists():
        raise SourceRemovedError(
            f"{source}: does not exist (check the path; keep-last-N may delete old steps)"
        )
    for converter in converters():
        info = converter.probe(source)
        if info is not None:
            return converter, info
    raise ConversionError(
        f"{source}: no FSDP (dcp_checkpoint/.metadata or model_state_dict/full_weights.pt) or Megatron "
        "(latest_checkpointed_iteration.txt + iter_*/mp_rank_*) checkpoint found; give a global_step_N dir"
    )
