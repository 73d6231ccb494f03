"""Bad or surprising Megatron input: one-line errors naming what was found where, nothing published."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from ckptd.convert.api import ConvertRequest
from ckptd.convert.megatron.converter import MegatronConverter
from ckptd.convert.pipeline import convert_checkpoint
from ckptd.errors import (
    CkptdError,
    ConversionError,
    IncompleteCheckpointError,
    UnsafePickleError,
    UnsupportedArchitectureError,
)
from ckptd.verify.manifest import read_manifest
from tests.factories.megatron import MegatronLayout, file_state, make_checkpoint, save_megatron

RANK = "run/checkpoints/global_step_10/actor/iter_0000010/{}/model_optim_rng.pt"


def _fails(tmp_path: Path, base: Path, step_dir: Path, error: type[CkptdError], *needles: str) -> str:
    out = tmp_path / "hf"
    with pytest.raises(error) as caught:
        convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="keep"))
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not out.exists()
    return message


def test_missing_rank_file_is_named(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(tp=2, pp=2))
    shutil.rmtree(tmp_path / RANK.format("mp_rank_01_001").rsplit("/", 1)[0])
    _fails(tmp_path, base, step_dir, ConversionError, "mp_rank_01_001/model_optim_rng.pt", "missing")


def test_shapes_that_do_not_fit_the_base_config(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "llama", MegatronLayout(tp=2, args="none"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    _fails(
        tmp_path,
        base,
        step_dir,
        ConversionError,
        "mp_rank_00",
        "linear_fc1.weight",
        "(48, 32) but (64, 32)",
        "ffn=64",
    )


def test_stored_args_that_contradict_the_base_config(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(tp=2))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "num_attention_heads": 8, "head_dim": 4}))
    _fails(tmp_path, base, step_dir, ConversionError, "num_attention_heads=4", "num_attention_heads=8")


def test_unknown_architecture_lists_the_supported_ones(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "llama", MegatronLayout())
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "phi3"}))
    _fails(tmp_path, base, step_dir, UnsupportedArchitectureError, "'phi3'", "qwen2, qwen2_moe, qwen3")


def _rewrite(path: Path, change: Any) -> None:
    state = torch.load(path, weights_only=False)
    change(state)
    torch.save(state, path)


def test_pickle_global_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout())
    path = tmp_path / RANK.format("mp_rank_00")
    _rewrite(path, lambda state: setattr(state["args"], "timeout", datetime.timedelta(minutes=5)))
    _fails(tmp_path, base, step_dir, UnsafePickleError, "datetime.timedelta", "mp_rank_00")


def test_corrupt_rank_file(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(tp=2))
    path = tmp_path / RANK.format("mp_rank_01")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _fails(tmp_path, base, step_dir, ConversionError, "mp_rank_01/model_optim_rng.pt", "corrupt")


def test_tied_copy_that_differs_from_the_embedding(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2_tied", MegatronLayout(pp=2))
    path = tmp_path / RANK.format("mp_rank_00_001")
    _rewrite(path, lambda state: state["model"]["output_layer.weight"].mul_(2))
    _fails(tmp_path, base, step_dir, ConversionError, "output_layer.weight", "tied")


def test_untied_base_but_no_output_layer(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2_tied", MegatronLayout(args="none"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    _fails(tmp_path, base, step_dir, ConversionError, "output_layer.weight", "tie_word_embeddings=false")


def test_layers_that_do_not_match_the_stored_stage_split(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(pp=2, stages=(1, 3)))
    path = tmp_path / RANK.format("mp_rank_00_000")
    _rewrite(path, lambda state: setattr(state["args"], "decoder_first_pipeline_num_layers", 2))
    _fails(tmp_path, base, step_dir, ConversionError, "first pipeline stage has 2 layers", "hold 1")


def test_mla_tensors_are_refused_as_not_supported_yet(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "llama", MegatronLayout())
    path = tmp_path / RANK.format("mp_rank_00")
    extra = "decoder.layers.0.self_attention.linear_kv_down_proj.weight"
    _rewrite(path, lambda state: state["model"].__setitem__(extra, torch.zeros(4, 32)))
    _fails(tmp_path, base, step_dir, ConversionError, "MLA", "not supported yet")


def test_ambiguous_folder_names_without_args(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen3_moe", MegatronLayout(ep=2, args="none"))
    _fails(tmp_path, base, step_dir, ConversionError, "ambiguous", "mp_rank_TT_PPP or mp_rank_TT_EEE")


def test_fp8_extra_state_is_a_manifest_warning(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(extra_state="fp8"))
    out = tmp_path / "hf"
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="keep"))
    assert any("FP8" in w for w in read_manifest(out)["warnings"])


def test_pickled_none_extra_state_is_empty(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(extra_state="pickled_none", tp=2))
    out = tmp_path / "hf"
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="keep"))
    assert read_manifest(out)["warnings"] == []


def test_fewer_vocab_rows_are_zero_padded_with_a_warning(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(tp=2, padded_vocab=90))
    out = tmp_path / "hf"
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="keep"))
    got, expected = file_state(out), file_state(base)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(got[key][:90], expected[key][:90])
        assert not got[key][90:].any()
    assert any("zero rows appended" in w for w in read_manifest(out)["warnings"])


def test_dtype_cast_keeps_bit_exact_values(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen3", MegatronLayout(tp=2, dtype=torch.float32))
    out = tmp_path / "hf"
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="bf16"))
    got, expected = file_state(out), file_state(base)
    assert all(torch.equal(got[k], v.to(torch.bfloat16)) for k, v in expected.items())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_plan_is_json_and_converts_nothing(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen3_moe", MegatronLayout(tp=2, pp=2, ep=2, etp=1))
    converter = MegatronConverter(memory_budget_bytes=3 * 64 * 1024)
    source = converter.probe(step_dir)
    assert source is not None
    request = ConvertRequest(source=step_dir, output=tmp_path / "hf", base_model=base, threads=1)
    plan = json.loads(json.dumps(converter.plan(source, request)))
    assert plan["layout"]["expert_parallel"] == 2
    assert plan["layout"]["rank_folders"] == [
        "mp_rank_00_000_000",
        "mp_rank_00_001_000",
        "mp_rank_01_000_001",
        "mp_rank_01_001_001",
    ]
    assert len(plan["shards"]) > 1
    assert plan["bytes_to_write"] == sum(s["bytes"] for s in plan["shards"])
    assert plan["bytes_to_read"] >= plan["bytes_to_write"]
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("where", ["step", "actor", "iter"])
def test_probe_accepts_step_actor_and_iter_dirs(tmp_path: Path, where: str) -> None:
    step_dir = tmp_path / "global_step_10"
    base, _ = make_checkpoint(tmp_path, "qwen2", MegatronLayout())
    save_megatron(base, step_dir, MegatronLayout())
    path = {"step": step_dir, "actor": step_dir / "actor", "iter": step_dir / "actor" / "iter_0000010"}[where]
    info = MegatronConverter().probe(path)
    assert info is not None and info.checkpoint_dir == step_dir / "actor" and info.step == 10
    assert MegatronConverter().probe(base) is None


def test_missing_tracker_means_still_being_written(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout())
    (step_dir / "actor" / "latest_checkpointed_iteration.txt").unlink()
    _fails(tmp_path, base, step_dir, IncompleteCheckpointError, "latest_checkpointed_iteration.txt", "still")


def test_tracker_naming_a_missing_iteration(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout())
    (step_dir / "actor" / "latest_checkpointed_iteration.txt").write_text("20")
    _fails(tmp_path, base, step_dir, ConversionError, "iteration 20", "iter_0000020")


def test_qwen2_moe_without_shared_expert_gate(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2_moe", MegatronLayout())
    path = tmp_path / RANK.format("mp_rank_00")
    _rewrite(path, lambda state: state["model"].pop("decoder.layers.1.mlp.shared_experts.gate_weight"))
    _fails(tmp_path, base, step_dir, ConversionError, "shared_experts.gate_weight", "before 0.16")


def test_rank_folders_beyond_the_stored_layout(tmp_path: Path) -> None:
    base, step_dir = make_checkpoint(tmp_path, "qwen2", MegatronLayout(tp=2))
    source = tmp_path / RANK.format("mp_rank_01")
    stale = tmp_path / RANK.format("mp_rank_02")
    stale.parent.mkdir()
    shutil.copy(source, stale)
    _fails(tmp_path, base, step_dir, ConversionError, "mp_rank_02", "tp=2")
