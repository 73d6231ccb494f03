"""Pure FSDP key handling and planning (formats.md §2.4, §2.5, §2.7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ckptd.convert.fsdp.arch import Architecture, is_moe
from ckptd.convert.fsdp.keys import (
    drop_tied_head,
    map_keys,
    natural_key,
    normalise_key,
    relative_key,
    select_model_path,
    vocab_rows_to_trim,
)
from ckptd.convert.fsdp.plan import batches, build_plan
from ckptd.convert.fsdp.source import TensorEntry
from ckptd.errors import ConversionError

Q = "model.layers.0.self_attn.q_proj"


def test_normalise_strips_leading_orig_mod_then_module_once_and_wrappers() -> None:
    assert normalise_key("_orig_mod.module.model.norm.weight") == "model.norm.weight"
    assert normalise_key("module._orig_mod.x") == "_orig_mod.x"  # order matters, as in RLinf
    assert normalise_key("model.layers.0._fsdp_wrapped_module.mlp.weight") == "model.layers.0.mlp.weight"
    assert normalise_key("model.module.weight") == "model.module.weight"  # only a leading one


def test_select_model_path_prefers_fsdp_checkpoint_model() -> None:
    paths = [("fsdp_checkpoint", "model", "a.weight"), ("fsdp_checkpoint", "optimizers", "state", "x")]
    assert select_model_path(paths) == ("fsdp_checkpoint", "model")
    assert select_model_path([("model", "a")]) == ("model",)
    assert select_model_path([("a.weight",)]) == ()
    assert relative_key(("fsdp_checkpoint", "model", "model.layers.0.w"), ("fsdp_checkpoint", "model")) == (
        "model.layers.0.w"
    )


def test_map_keys_peft_base_layer_and_lora_pairs() -> None:
    keys = [
        f"base_model.model.{Q}.base_layer.weight",
        f"base_model.model.{Q}.base_layer.bias",
        f"base_model.model.{Q}.lora_A.default.weight",
        f"base_model.model.{Q}.lora_B.default.weight",
        "base_model.model.model.norm.weight",
    ]
    keymap = map_keys(keys)
    assert keymap.peft and keymap.adapter_name == "default"
    assert sorted(keymap.weights) == sorted([f"{Q}.weight", f"{Q}.bias", "model.norm.weight"])
    pair = keymap.lora[f"{Q}.weight"]
    assert (pair.module, pair.a_key) == (Q, keys[2])


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ([f"{Q}.lora_A.default.weight"], "other half"),
        ([f"{Q}.lora_A.one.weight", f"{Q}.lora_B.one.weight", "m.lora_A.two.weight"], "several"),
        (["model.embed_tokens.lora_embedding_A.default"], "not supported"),
        (["module.a.weight", "a.weight"], "both normalise"),
    ],
)
def test_map_keys_refuses(keys: list[str], needle: str) -> None:
    with pytest.raises(ConversionError, match=needle):
        map_keys(keys)


def test_drop_tied_head_only_when_tied_and_embedding_present() -> None:
    keymap = map_keys(["model.embed_tokens.weight", "lm_head.weight"])
    assert drop_tied_head(keymap, tied=False) is None
    assert drop_tied_head(keymap, tied=True) == "lm_head.weight"
    assert "lm_head.weight" not in keymap.weights


def test_vocab_padding_rows_and_natural_order() -> None:
    expected = {"model.embed_tokens.weight": (96, 32), "model.norm.weight": (32,)}
    assert vocab_rows_to_trim("model.embed_tokens.weight", (128, 32), expected) == 96
    assert vocab_rows_to_trim("model.embed_tokens.weight", (96, 32), expected) is None
    assert vocab_rows_to_trim("model.norm.weight", (40,), expected) is None
    names = ["model.layers.10.a", "model.layers.9.a", "model.layers.1.a"]
    assert sorted(names, key=natural_key) == ["model.layers.1.a", "model.layers.9.a", "model.layers.10.a"]


def _arch(tied: bool) -> Architecture:
    expected = {"model.embed_tokens.weight": (8, 4), f"{Q}.weight": (4, 4), "model.norm.weight": (4,)}
    if not tied:
        expected["lm_head.weight"] = (8, 4)
    return Architecture("qwen2", tied, 8, expected)


def _entries(**extra: tuple[int, ...]) -> dict[str, TensorEntry]:
    shapes = {"model.embed_tokens.weight": (10, 4), f"{Q}.weight": (4, 4), "model.norm.weight": (4,), **extra}
    return {k: TensorEntry(v, torch.float32) for k, v in shapes.items()}


def test_build_plan_trims_vocab_drops_tied_head_and_casts() -> None:
    entries = _entries(**{"lm_head.weight": (10, 4)})
    plan = build_plan(
        entries, _arch(tied=True), torch.bfloat16, merge=True, max_shard_bytes=50, where=Path("x")
    )
    assert plan.tied_head_dropped == "lm_head.weight"
    assert plan.tensors["model.embed_tokens.weight"].keep_rows == 8
    assert plan.tensors["model.embed_tokens.weight"].same_as == "lm_head.weight"
    assert {spec.dtype for shard in plan.shards for spec in shard.tensors} == {torch.bfloat16}
    assert len(plan.shards) == 2 and any("padding rows" in w for w in plan.warnings)


def test_build_plan_lists_missing_keys_and_refuses_tied_head_lora_merge() -> None:
    with pytest.raises(ConversionError, match="missing"):
        build_plan(_entries(), _arch(tied=False), None, merge=True, max_shard_bytes=50, where=Path("x"))
    lora = {
        "lm_head.lora_A.default.weight": (2, 4),
        "lm_head.lora_B.default.weight": (10, 2),
        "lm_head.weight": (10, 4),
    }
    with pytest.raises(ConversionError, match="use --lora adapter"):
        build_plan(_entries(**lora), _arch(tied=True), None, merge=True, max_shard_bytes=50, where=Path("x"))


def test_batches_bound_source_bytes() -> None:
    keys = [["a"], ["b", "c"], ["d"]]
    assert batches(keys, {"a": 10, "b": 5, "c": 5, "d": 30}, 20) == [[0, 1], [2]]


def test_is_moe() -> None:
    assert is_moe({"num_experts": 8}) and is_moe({"num_local_experts": 4})
    assert not is_moe({"num_experts": 0}) and not is_moe({"hidden_size": 8})


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "qwen3", "qwen3_tied", "llama", "mistral"])
def test_name_tables_agree_with_the_meta_model(kind: str, tmp_path: Path) -> None:
    from transformers import AutoConfig

    from ckptd.convert.fsdp.arch import load_architecture, meta_architecture
    from ckptd.convert.hfdir import load_config
    from tests.factories.tiny_hf import tiny_config

    tiny_config(kind).save_pretrained(tmp_path)
    fast = load_architecture(tmp_path, load_config(tmp_path))
    meta = meta_architecture(tmp_path, AutoConfig.from_pretrained(tmp_path))
    assert (fast.expected, fast.tied) == (meta.expected, meta.tied)
