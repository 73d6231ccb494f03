"""Finding a legacy Megatron checkpoint on disk and opening its rank files (mmapped, weights_only)."""

from __future__ import annotations

import ctypes
import mmap
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ckptd.convert.megatron.merge import extra_state_kind
from ckptd.convert.safe_load import plain, safe_load
from ckptd.errors import ConversionError, IncompleteCheckpointError

TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILE = "model_optim_rng.pt"
_ITER = re.compile(r"^iter_(\d{7,})$")
_CHUNK = re.compile(r"^model\d*$")
# (shape, dtype) for a tensor; a string describing anything else (e.g. an _extra_state kind).
TensorMeta = tuple[tuple[int, ...], torch.dtype] | str


@dataclass(frozen=True)
class Located:
    actor_dir: Path
    iter_dir: Path
    iteration: int | None
    folders: tuple[str, ...]  # mp_rank_* folders holding a model file


def actor_dir_of(source: Path) -> Path | None:
    """The folder with the tracker and ``iter_*``: a step dir's ``actor/``, itself, or an iter's parent."""
    if source.is_file() or not source.is_dir():
        return None
    if _ITER.match(source.name) or source.name == "release":
        source = source.parent
    for candidate in (source / "actor", source):
        if (candidate / TRACKER).is_file() or any(candidate.glob("iter_*/mp_rank_*")):
            return candidate
    return None


def locate(actor_dir: Path) -> Located:
    tracker = actor_dir / TRACKER
    if not tracker.is_file():
        raise IncompleteCheckpointError(f"{tracker}: missing; the checkpoint is still being written")
    text = tracker.read_text().strip()
    iteration = None if text == "release" else _parse_iteration(text, tracker)
    iter_dir = actor_dir / ("release" if iteration is None else f"iter_{iteration:07d}")
    if not iter_dir.is_dir():
        raise ConversionError(f"{tracker}: names iteration {text} but {iter_dir.name}/ does not exist")
    if (iter_dir / "metadata.json").is_file() or (iter_dir / ".metadata").is_file():
        raise ConversionError(f"{iter_dir}: Megatron torch_dist checkpoints are not supported yet")
    folders = tuple(sorted(p.parent.name for p in iter_dir.glob(f"mp_rank_*/{RANK_FILE}")))
    if not folders:
        raise ConversionError(f"{iter_dir}: no mp_rank_*/{RANK_FILE} files")
    return Located(actor_dir=actor_dir, iter_dir=iter_dir, iteration=iteration, folders=folders)


def _parse_iteration(text: str, tracker: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConversionError(f"{tracker}: expected an iteration number, found {text[:40]!r}") from None


def load_rank(iter_dir: Path, folder: str) -> dict[str, Any]:
    path = iter_dir / folder / RANK_FILE
    state = safe_load(path)
    if not isinstance(state, dict) or not any(_CHUNK.match(str(k)) for k in state):
        raise ConversionError(f"{path}: no 'model' or 'model0..' entry; not a Megatron model file")
    return state


def model_chunks(state: Mapping[str, Any], path: Path) -> dict[str, Mapping[str, Any]]:
    chunks = {str(k): v for k, v in state.items() if _CHUNK.match(str(k))}
    for key, value in chunks.items():
        if not isinstance(value, Mapping):
            raise ConversionError(f"{path}: entry {key!r} is {type(value).__name__}, not a state dict")
    return chunks


def read_args(state: Mapping[str, Any]) -> dict[str, Any]:
    """The stored args as a plain dict (Namespace or DictConfig stub); empty when absent."""
    args = plain(state.get("args"))
    return args if isinstance(args, dict) else {}


def tensor_index(chunks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, TensorMeta]]:
    """chunk -> key -> (shape, dtype) of every tensor; ``_extra_state`` entries -> their kind."""
    index: dict[str, dict[str, TensorMeta]] = {}
    for chunk, tensors in chunks.items():
        entries: dict[str, TensorMeta] = {}
        for key, value in tensors.items():
            if key.endswith("_extra_state"):
                entries[key] = extra_state_kind(value)
            elif isinstance(value, torch.Tensor):
                entries[key] = (tuple(value.shape), value.dtype)
            else:
                entries[key] = f"non-tensor {type(value).__name__}"
        index[chunk] = entries
    return index


class RankFiles:
    """Each rank file loaded once (mmapped) and shared by every shard; thread-safe."""

    def __init__(self, iter_dir: Path) -> None:
        self.iter_dir = iter_dir
        self._chunks: dict[str, dict[str, Mapping[str, Any]]] = {}
        self._args: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def chunks(self, folder: str) -> dict[str, Mapping[str, Any]]:
        with self._lock:
            if folder not in self._chunks:
                state = load_rank(self.iter_dir, folder)
                if self._args is None:
                    self._args = read_args(state)
                self._chunks[folder] = model_chunks(state, self.iter_dir / folder)
            return self._chunks[folder]

    def args(self, folder: str) -> dict[str, Any]:
        self.chunks(folder)
        return self._args or {}


_MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def release_pages(tensors: Iterable[torch.Tensor]) -> None:
    """Drop the pages of mmapped source tensors from this process's RSS once they are merged.

    The mappings are private, read-only in practice and file-backed, so a later access simply
    re-reads the file: memory stays bounded by the shards in flight, not by the checkpoint size.
    """
    if _LIBC is None:
        return
    page = mmap.PAGESIZE
    for tensor in tensors:
        storage = tensor.untyped_storage()
        start = -(-storage.data_ptr() // page) * page
        end = (storage.data_ptr() + storage.nbytes()) // page * page
        if end > start:
            _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


def return_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps freed tensors below its mmap threshold)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
