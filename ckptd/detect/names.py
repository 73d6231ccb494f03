"""Names the trainers give to step, iteration and marker files."""

from __future__ import annotations

import re

STEP_PREFIX = "global_step_"
TRACKER_NAME = "latest_checkpointed_iteration.txt"
DCP_DIR = "dcp_checkpoint"
DCP_METADATA = ".metadata"
DCP_METADATA_TMP = ".metadata.tmp"
FULL_WEIGHTS_DIR = "model_state_dict"
# The second spelling exists only in RLinf's docs; accept it in case someone followed them.
FULL_WEIGHTS_NAMES = ("full_weights.pt", "full_weigths.pt")
DATA_PT = "data.pt"

_STEP_RE = re.compile(r"global_step_([0-9]+)")
_ITER_RE = re.compile(r"iter_([0-9]+)")
_MP_RANK_RE = re.compile(r"mp_rank_[0-9]+(?:_[0-9]+){0,2}")


def parse_step_dir_name(name: str) -> int | None:
    """``global_step_<int>`` -> int; anything else (``global_step_10-hf``, ``best_model``) -> None."""
    match = _STEP_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_iter_dir_name(name: str) -> int | None:
    match = _ITER_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def is_mp_rank_dir_name(name: str) -> bool:
    return _MP_RANK_RE.fullmatch(name) is not None


def parse_tracker(text: str) -> int | None:
    """The tracker's decimal iteration (newline optional); None for ``release``, empty or garbage."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        return None
    return int(stripped)
