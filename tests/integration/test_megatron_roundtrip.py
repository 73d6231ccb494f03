"""Tiny HF models → sharded like Megatron-Core saves them → converted → bit-exact and same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptd.convert.api import ConvertRequest
from ckptd.convert.pipeline import convert_checkpoint
from ckptd.verify.manifest import read_manifest
from tests.factories.megatron import MegatronLayout, assert_same_weights, make_checkpoint
from tests.factories.tiny_hf import logits_of, sample_input_ids

L = MegatronLayout
CASES = {
    "qwen2-tp2-pp2": ("qwen2", L(tp=2, pp=2)),
    "qwen2-tp4-local-fp32": ("qwen2", L(tp=4, te=False, dtype=torch.float32)),
    "qwen2_tied-pp4-omegaconf": ("qwen2_tied", L(pp=4, args="omegaconf")),
    "qwen2_tied-tp2-pp2-vpp2": ("qwen2_tied", L(tp=2, pp=2, vpp=2)),
    "qwen3-tp2-uneven-omegaconf": ("qwen3", L(tp=2, pp=2, stages=(1, 3), args="omegaconf")),
    "qwen3_tied-tp2-pp2-local": ("qwen3_tied", L(tp=2, pp=2, te=False)),
    "qwen3-dualpipev": ("qwen3", L(pp=2, vpp=2, dualpipev=True)),
    "llama-tp4-pp2-padded": ("llama", L(tp=4, pp=2, padded_vocab=128)),
    "mistral-pp3-uneven-local": ("mistral", L(pp=3, stages=(2, 1, 1), te=False)),
    "qwen3_moe-ep2": ("qwen3_moe", L(ep=2, etp=1)),
    "qwen3_moe-tp2-pp2-ep2-sequential-omegaconf": (
        "qwen3_moe",
        L(tp=2, pp=2, ep=2, etp=1, grouped_experts=False, args="omegaconf"),
    ),
    "qwen2_moe-tp2-ep2-etp2-local": ("qwen2_moe", L(tp=2, ep=2, etp=2, te=False)),
    "qwen3_moe-dense-layers-pp2-ep2": ("qwen3_moe", L(pp=2, ep=2, etp=1)),
}
OVERRIDES = {"qwen3_moe-dense-layers-pp2-ep2": {"mlp_only_layers": [0, 3]}}


def convert(base: Path, step_dir: Path, out: Path, **request: object) -> dict[str, object]:
    options: dict[str, object] = {"dtype": "keep", **request}
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, **options))  # type: ignore[arg-type]
    return read_manifest(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_is_bit_exact_with_same_logits(tmp_path: Path, case: str) -> None:
    kind, layout = CASES[case]
    base, step_dir = make_checkpoint(tmp_path, kind, layout, **OVERRIDES.get(case, {}))
    out = tmp_path / "hf"
    manifest = convert(base, step_dir, out)
    assert_same_weights(base, out)
    ids = sample_input_ids(96)
    assert torch.equal(logits_of(out, ids), logits_of(base, ids))
    found = manifest["parallel_layout"]
    assert isinstance(found, dict)
    assert (found["tensor_parallel"], found["pipeline_parallel"]) == (layout.tp, layout.pp)
    assert (found["virtual_pipeline"], found["expert_parallel"]) == (layout.vpp, layout.ep)
    assert found["iteration"] == layout.step
    assert manifest["warnings"] == []
    assert json.loads((out / "config.json").read_text())["dtype"] == str(layout.dtype).removeprefix("torch.")
