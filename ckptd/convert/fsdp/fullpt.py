"""Read ``model_state_dict/full_weights.pt`` (formats.md §2.1) memory-mapped, a batch at a time.

Each batch maps the file afresh, copies its tensors out and drops the mapping, so the pages this
process keeps resident stay bounded by a batch instead of growing to the whole file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ckptd.convert.fsdp.keys import MODEL_PATHS
from ckptd.convert.fsdp.source import TensorEntry
from ckptd.errors import ConversionError, UnsafePickleError

FULL_WEIGHTS_NAMES = ("full_weights.pt", "full_weigths.pt")  # the second is the docs' spelling (§1.2)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_complete_zip(path: Path) -> bool:
    """torch.save writes the zip central directory last: readable means the writer closed the file."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True, mmap=True)`` with one-line errors naming the file."""
    if not is_complete_zip(path):
        raise ConversionError(
            f"{path}: not a complete torch.save file (no zip central directory): truncated or being written"
        )
    try:
        return torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        match = _GLOBAL.search(str(exc))
        name = match.group(1) if match else "an unknown global"
        raise UnsafePickleError(
            f"{path}: the pickle needs {name}, not on the weights_only allowlist; refusing to load it"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise ConversionError(f"{path}: unreadable torch.save file ({type(exc).__name__}: {text})") from None


def find_tensor_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    """RLinf step 1-2 (§2.4): the first candidate mapping holding any tensor, tensors only."""
    for path in MODEL_PATHS:
        node = obj
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and any(isinstance(v, torch.Tensor) for v in node.values()):
            return {str(k): v for k, v in node.items() if isinstance(v, torch.Tensor)}
    return {}


class FullPtSource:
    """The tensors of one ``full_weights.pt``, loadable by name."""

    reader = "full_weights.pt"

    def __init__(self, path: Path) -> None:
        self.path = path
        tensors = find_tensor_dict(load_weights_only(path))
        if not tensors:
            raise ConversionError(f"{path}: holds no tensors under any of the known model keys")
        self.entries = {k: TensorEntry(tuple(v.shape), v.dtype) for k, v in tensors.items()}

    @property
    def layout(self) -> dict[str, Any]:
        return {"file": self.path.name}

    def load(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        tensors = find_tensor_dict(load_weights_only(self.path))
        missing = [name for name in names if name not in tensors]
        if missing:
            raise ConversionError(f"{self.path}: changed while reading; {missing[0]} is gone")
        # Copy out of the mapping here, in the prefetch thread: the disk reads then overlap the
        # writing of the previous batch instead of happening as page faults inside the writer.
        return {name: tensors[name].clone() for name in names}
