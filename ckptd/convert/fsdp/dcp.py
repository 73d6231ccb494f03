"""Read the model tensors of a torch.distributed.checkpoint (DCP) dir without a process group.

Only ``fsdp_checkpoint.model.*`` is ever read: a skeleton of the wanted tensors at their global size is
filled in place by the public ``dcp.load(..., no_dist=True)`` (formats.md §2.3), one batch at a time.
``.metadata`` is a pickle; torch reads it with plain ``pickle.load``, so we read it ourselves with an
unpickler that only admits the DCP metadata classes (formats.md §2.2, §2.7).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

from ckptd.convert.fsdp.keys import first, relative_key, select_model_path
from ckptd.convert.fsdp.source import METADATA_NAME, TensorEntry
from ckptd.errors import ConversionError, UnsafePickleError

_METADATA_CLASSES = frozenset(
    {
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    }
)
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {("torch.distributed.checkpoint.metadata", name) for name in _METADATA_CLASSES}
    | {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.distributed.checkpoint.filesystem", "_StoragePrefix"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        # storage_meta.checkpoint_id is the save path (§2.7); only path objects, never code.
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib._local", "PosixPath"),
        ("pathlib._local", "PurePosixPath"),
        ("collections", "OrderedDict"),
    }
)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafePickleError(
            f"DCP .metadata needs the global {module}.{name}, not on the allowlist; refusing to load it"
        )


def read_metadata(directory: Path) -> Metadata:
    path = directory / METADATA_NAME
    try:
        with path.open("rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing; the DCP checkpoint is incomplete") from None
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise ConversionError(f"{path}: unreadable DCP metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(metadata, Metadata):
        raise ConversionError(f"{path}: holds a {type(metadata).__name__}, not DCP Metadata")
    return metadata


class _SafeReader(FileSystemReader):
    """FileSystemReader that hands dcp.load the metadata we already read safely."""

    def __init__(self, directory: Path, metadata: Metadata) -> None:
        super().__init__(directory)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if self._metadata.storage_meta is None:
            self._metadata.storage_meta = StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata


class DcpSource:
    """The model tensors of one DCP dir, loadable by name in batches."""

    reader = "dcp"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.metadata = read_metadata(directory)
        self._check_files()
        tensors = {
            key: md
            for key, md in self.metadata.state_dict_metadata.items()
            if isinstance(md, TensorStorageMetadata)
        }
        planner = self.metadata.planner_data or {}
        paths = {key: tuple(planner.get(key, tuple(key.split(".")))) for key in tensors}
        self.model_path = select_model_path(paths.values())
        self._paths: dict[str, tuple[str, ...]] = {}
        self.entries: dict[str, TensorEntry] = {}
        for key, md in tensors.items():
            path = paths[key]
            if len(path) > len(self.model_path) and path[: len(self.model_path)] == self.model_path:
                name = relative_key(path, self.model_path)
                self._paths[name] = path
                self.entries[name] = TensorEntry(tuple(md.size), md.properties.dtype)
        if not self.entries:
            raise ConversionError(f"{directory}: DCP checkpoint holds no model tensors")

    def _check_files(self) -> None:
        storage = self.metadata.storage_data or {}
        files = sorted({info.relative_path for info in storage.values()})
        missing = [name for name in files if not (self.directory / name).is_file()]
        if missing:
            raise ConversionError(
                f"{self.directory / missing[0]}: DCP shard file missing ({len(missing)} of {len(files)} "
                f"missing: {first(missing)}); the checkpoint is incomplete or was partly deleted"
            )
        self.files = files

    @property
    def layout(self) -> dict[str, Any]:
        return {"dcp_files": len(self.files), "model_path": ".".join(self.model_path)}

    def load(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Read exactly these model tensors (full, on CPU) and nothing else."""
        skeleton: dict[str, Any] = {}
        out: dict[str, torch.Tensor] = {}
        for name in names:
            entry = self.entries[name]
            tensor = torch.empty(entry.shape, dtype=entry.dtype)
            node = skeleton
            path = self._paths[name]
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = tensor
            out[name] = tensor
        try:
            with warnings.catch_warnings():
                # Loading without a process group is the point; torch warns that it assumes so.
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp_load(skeleton, storage_reader=_SafeReader(self.directory, self.metadata), no_dist=True)
        except (CheckpointException, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise ConversionError(
                f"{self.directory}: reading DCP tensors failed ({type(exc).__name__}: {_one_line(exc)})"
            ) from None
        return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]
