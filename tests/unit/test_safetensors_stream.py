from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ckptd.convert.safetensors_stream import DTYPE_NAMES, write_safetensors
from ckptd.errors import ConversionError


def sample() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=generator)
    tensors = {
        "bf16": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
        "f16": torch.randn(7, generator=generator).half(),
        "f32.view_of_rows": base[2:5],  # a view into a larger storage: only its own rows are written
        "f64": torch.randn(2, 2, generator=generator).double(),
        "i64": torch.arange(5),
        "i32": torch.arange(3, dtype=torch.int32),
        "u8": torch.tensor([1, 2, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "f8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
    }
    tensors["tied"] = tensors["bf16"]  # shared storage: save_file refuses this, we write it twice
    return {k: v.contiguous() for k, v in tensors.items()}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def test_round_trip_through_safetensors_every_dtype(tmp_path: Path) -> None:
    tensors = sample()
    path = tmp_path / "x.safetensors"
    digest = write_safetensors(path, tensors, {"format": "pt"})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(bits(loaded[name]), bits(tensor)), name
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_header_is_8_byte_aligned(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": torch.zeros(3)}, {"format": "pt"})
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    assert path.stat().st_size == 8 + header_len + 12


def test_every_torch_dtype_we_name_is_one_safetensors_reads() -> None:
    assert set(DTYPE_NAMES.values()) <= {
        "BOOL",
        "U8",
        "I8",
        "I16",
        "U16",
        "I32",
        "U32",
        "I64",
        "U64",
        "F16",
        "BF16",
        "F32",
        "F64",
        "F8_E4M3",
        "F8_E5M2",
    }


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"c: dtype torch\.complex64 has no safetensors name"):
        write_safetensors(tmp_path / "x", {"c": torch.zeros(2, dtype=torch.complex64)}, {})
