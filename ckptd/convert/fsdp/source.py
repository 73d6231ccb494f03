"""What every FSDP reader offers the converter (kept free of torch.distributed imports, which cost
about a second: only a DCP conversion loads them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ckptd.convert.writer import tensor_nbytes

METADATA_NAME = ".metadata"  # DCP's; written last and atomically (formats.md §1.3)


@dataclass(frozen=True)
class TensorEntry:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.dtype)


class TensorSource(Protocol):
    reader: str
    entries: dict[str, TensorEntry]  # model tensor name (below the model path) -> global shape/dtype

    @property
    def layout(self) -> dict[str, Any]: ...

    def load(self, names: Sequence[str]) -> dict[str, torch.Tensor]: ...
