"""LoRA FSDP checkpoints: merged output vs peft's merge_and_unload, adapter output vs PeftModel."""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.factories.fsdp import WrittenCkpt, standard_checkpoints
from tests.factories.tiny_hf import logits_of, sample_input_ids, state_dict_of
from tests.integration.fsdp_helpers import convert, manifest, read_output

_PEFT_MARKERS = ("lora_", "base_layer", "base_model.model")


@pytest.fixture(scope="module")
def ckpts() -> dict[str, WrittenCkpt]:
    return standard_checkpoints()


def _peft_merged(ckpt: WrittenCkpt) -> dict[str, torch.Tensor]:
    merged: Any = deepcopy(ckpt.model).merge_and_unload()
    return state_dict_of(merged)


def _within_one_bf16_step(out: torch.Tensor, reference: torch.Tensor) -> None:
    assert out.dtype == torch.bfloat16
    exact = reference.to(torch.bfloat16)
    ulp = torch.abs(torch.nextafter(exact, exact * 2 + 1) - exact).float()
    assert torch.all((out.float() - exact.float()).abs() <= ulp)


@pytest.mark.parametrize("file", ["dcp", "pt"])
def test_merge_matches_peft_merge_and_unload(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path, file: str
) -> None:
    ckpt = ckpts["qwen2_lora"]
    source = ckpt.step_dir if file == "dcp" else ckpt.full_weights
    out = tmp_path / "hf"
    convert(source, out, dtype="bf16")  # alpha from the trainer config's lora_path adapter
    tensors = read_output(out)
    expected = _peft_merged(ckpt)
    assert sorted(tensors) == sorted(expected)
    assert not [k for k in tensors if any(m in k for m in _PEFT_MARKERS)]
    for name, reference in expected.items():
        _within_one_bf16_step(tensors[name], reference)
    lora = manifest(out)["extra"]["lora"]
    assert lora["r"] == 4 and lora["alpha"] == 16 and lora["mode"] == "merge"
    assert "lora_path" in lora["alpha_from"]


def test_rslora_merge_with_lora_config_fp32(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    ckpt = ckpts["qwen3_tied_rslora"]
    out = tmp_path / "hf"
    convert(ckpt.step_dir, out, dtype="fp32", lora_config=ckpt.lora_config / "adapter_config.json")
    tensors = read_output(out)
    expected = _peft_merged(ckpt)
    assert sorted(tensors) == sorted(expected) and "lm_head.weight" not in tensors
    for name, reference in expected.items():
        torch.testing.assert_close(tensors[name], reference, rtol=0, atol=1e-6)
    assert manifest(out)["extra"]["lora"]["use_rslora"] is True


def test_adapter_output_loads_in_peft_with_merged_logits(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path
) -> None:
    from peft import PeftModel

    ckpt = ckpts["qwen2_lora"]
    merged_out, adapter_out = tmp_path / "merged", tmp_path / "adapter"
    convert(ckpt.step_dir, merged_out, dtype="fp32")
    convert(ckpt.step_dir, adapter_out, dtype="fp32", lora="adapter")
    adapter_dir = adapter_out / "lora_adapter"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 16)
    assert config["target_modules"] == sorted(ckpt.spec.lora.targets)  # type: ignore[union-attr]
    assert manifest(adapter_out)["adapter"] == "lora_adapter"
    # The main weights are the un-merged base layers, under plain HF names.
    base = state_dict_of(ckpt.model.get_base_model())
    base = {k.replace(".base_layer.", "."): v for k, v in base.items() if "lora_" not in k}
    assert sorted(read_output(adapter_out)) == sorted(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(adapter_out, dtype=torch.float32), adapter_dir
    )
    ids = sample_input_ids(96)
    torch.testing.assert_close(logits_of(model, ids), logits_of(merged_out, ids), rtol=1e-5, atol=1e-5)


def test_alpha_unknown_falls_back_to_r_with_warning(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    ckpt = ckpts["qwen2_lora"]
    lone = tmp_path / "lone" / "full_weights.pt"  # no step dir, so no trainer config to find
    lone.parent.mkdir()
    shutil.copy(ckpt.full_weights, lone)
    out = tmp_path / "hf"
    convert(lone, out, base_model=ckpt.base_dir, dtype="bf16")
    data = manifest(out)
    assert data["extra"]["lora"]["alpha"] == 4.0
    assert any("assuming alpha = r" in w for w in data["warnings"])
