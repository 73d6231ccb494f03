"""Write a .safetensors file tensor by tensor, hashing the bytes as they go out.

Written by hand because ``safetensors.torch.save_file`` first builds the whole file as one ``bytes``
object (one extra copy of the shard in memory) and gives no hash: reading every shard back for its
sha256 cost more than serialising it. The format is small and fixed: an 8-byte little-endian header
length, a JSON header (dtype, shape, data_offsets per tensor, plus ``__metadata__``) padded with
spaces to 8 bytes, then the raw little-endian tensor bytes in header order. ``safetensors`` itself
reads the result (verification opens every shard with ``safe_open``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import torch

from ckptd.errors import ConversionError

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.int64: "I64",
    torch.uint64: "U64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
_WRITE_CHUNK = 64 * 1024 * 1024


def header_bytes(
    layout: Iterable[tuple[str, Sequence[int], torch.dtype]], metadata: Mapping[str, str]
) -> bytes:
    """Length prefix + JSON header for tensors laid out back to back in ``layout`` order."""
    entries: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape, dtype in layout:
        if dtype not in DTYPE_NAMES:
            raise ConversionError(f"{name}: dtype {dtype} has no safetensors name")
        size = math.prod(shape) * dtype.itemsize
        entries[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (it must be contiguous and on the CPU)."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    view: memoryview = flat.view(torch.uint8).numpy().data
    return view


def start_writeback(handle: BinaryIO, start: int) -> int:
    """Start writing ``[start, now)`` to disk without waiting (Linux: DONTNEED on dirty pages starts
    async writeback): the final fsync then has little left, and the output does not crowd the cache."""
    handle.flush()
    end = handle.tell()
    if hasattr(os, "posix_fadvise") and end > start:
        os.posix_fadvise(handle.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
    return end


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """Write ``tensors`` (contiguous CPU tensors, each with its own storage) and return the file's sha256."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this host is not")
    header = header_bytes(((name, t.shape, t.dtype) for name, t in tensors.items()), metadata)
    digest = hashlib.sha256(header)
    with path.open("wb") as handle:
        handle.write(header)
        flushed = 0
        for tensor in tensors.values():
            data = tensor_bytes(tensor)
            for start in range(0, len(data), _WRITE_CHUNK):
                chunk = data[start : start + _WRITE_CHUNK]
                handle.write(chunk)
                digest.update(chunk)
                if handle.tell() - flushed >= _WRITE_CHUNK:
                    flushed = start_writeback(handle, flushed)
        handle.flush()
    return digest.hexdigest()
