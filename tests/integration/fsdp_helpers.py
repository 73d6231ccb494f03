"""Shared helpers for the FSDP integration tests: convert, read the output back, compare."""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ckptd.convert.api import ConvertRequest, ConvertResult
from ckptd.convert.pipeline import convert_checkpoint


def convert(source: Path, out: Path, **options: Any) -> ConvertResult:
    return convert_checkpoint(ConvertRequest(source=source, output=out, **options))


def read_output(out: Path) -> dict[str, torch.Tensor]:
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for filename in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(out / filename))
    assert set(tensors) == set(index["weight_map"])
    return tensors


def assert_bit_exact(
    out: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    assert sorted(out) == sorted(expected)
    for name, tensor in expected.items():
        assert out[name].dtype == dtype, name
        assert torch.equal(out[name], tensor.to(dtype)), name


def rounded_copy(model: Any, dtype: torch.dtype) -> Any:
    """An fp32 copy whose parameters went through ``dtype`` (buffers such as inv_freq untouched)."""
    copy = deepcopy(model)
    with torch.no_grad():
        for param in copy.parameters():
            param.copy_(param.to(dtype).float())
    return copy


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "ckptd.json").read_text())
    return data
