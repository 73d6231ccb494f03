"""FSDP2 checkpoints written by real gloo process groups -> HF dirs, compared bit for bit and by logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptd.convert.api import ConvertRequest
from ckptd.convert.fsdp.converter import FsdpConverter
from ckptd.convert.pipeline import DirectHooks, convert_checkpoint
from ckptd.errors import LeaseLostError
from ckptd.verify.checks import read_shapes
from tests.factories.fsdp import WrittenCkpt, standard_checkpoints
from tests.factories.tiny_hf import logits_of, sample_input_ids, state_dict_of
from tests.integration.fsdp_helpers import assert_bit_exact, convert, manifest, read_output, rounded_copy


@pytest.fixture(scope="module")
def ckpts() -> dict[str, WrittenCkpt]:
    return standard_checkpoints()


def _logits_match(out: Path, ckpt: WrittenCkpt, dtype: torch.dtype) -> None:
    ids = sample_input_ids(ckpt.model.config.vocab_size)
    assert torch.equal(logits_of(out, ids), logits_of(rounded_copy(ckpt.model, dtype), ids))


# qwen3 and qwen2_tied_w3 come from 3 ranks: uneven dim-0 chunks.
@pytest.mark.parametrize("name", ["qwen2", "qwen2_tied", "qwen3", "llama", "qwen2_tied_w3"])
def test_dcp_round_trip_bf16_is_bit_exact(ckpts: dict[str, WrittenCkpt], tmp_path: Path, name: str) -> None:
    ckpt = ckpts[name]
    out = tmp_path / "hf"
    result = convert(ckpt.step_dir, out, dtype="bf16")
    assert result.reader == "dcp"
    assert result.step == ckpt.spec.step
    assert_bit_exact(read_output(out), state_dict_of(ckpt.model), torch.bfloat16)
    _logits_match(out, ckpt, torch.bfloat16)
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    for asset in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / asset).is_file(), asset
    assert not out.with_name("hf.partial").exists()


@pytest.mark.parametrize("name", ["qwen2_tied", "qwen3"])
def test_full_weights_pt_keep_dtype_is_bit_exact(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path, name: str
) -> None:
    ckpt = ckpts[name]
    out = tmp_path / "hf"
    result = convert(ckpt.full_weights, out, dtype="keep")
    assert result.reader == "full_weights.pt"
    assert_bit_exact(read_output(out), state_dict_of(ckpt.model), torch.float32)
    _logits_match(out, ckpt, torch.float32)
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"


def test_tied_output_has_one_embedding_and_manifest(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    out = tmp_path / "hf"
    convert(ckpts["qwen2_tied"].step_dir, out, dtype="bf16", max_shard_bytes=4000)
    shapes, _, total = read_shapes(out)
    assert "lm_head.weight" not in shapes and "model.embed_tokens.weight" in shapes
    data = manifest(out)
    assert data["reader"] == "dcp" and data["step"] == 7 and data["format"] == "fsdp"
    assert data["extra"]["tied_lm_head_dropped"] is True
    assert data["extra"]["readers_available"] == ["dcp", "full_weights.pt"]
    assert len(data["shards"]) > 3 and all(len(s["sha256"]) == 64 for s in data["shards"])
    assert data["tensor_bytes"] == total
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total


def test_old_layout_dcp_in_actor_and_base_from_huggingface_model(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path
) -> None:
    ckpt = ckpts["llama_old"]
    out = tmp_path / "hf"
    result = convert(ckpt.actor, out, dtype="fp32")
    assert result.reader == "dcp"
    assert manifest(out)["base_model"] == str(ckpt.actor / "huggingface_model")
    assert_bit_exact(read_output(out), state_dict_of(ckpt.model), torch.float32)


def test_plan_describes_without_writing(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    converter = FsdpConverter()
    info = converter.probe(ckpts["qwen2"].step_dir)
    assert info is not None and info.reader == "dcp"
    request = ConvertRequest(source=ckpts["qwen2"].step_dir, output=tmp_path / "x", dtype="bf16")
    plan = converter.plan(info, request)
    assert plan["dtype"] == "bfloat16" and plan["layout"]["dcp_files"] == 2
    assert plan["bytes_to_write"] * 2 == plan["bytes_to_read"]  # fp32 read, bf16 written
    assert not (tmp_path / "x").exists()


def test_vocab_padding_rows_are_trimmed_and_fp16_config(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path
) -> None:
    ckpt = ckpts["qwen2"]
    state = torch.load(ckpt.full_weights, weights_only=True)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = torch.cat([state[name], torch.full((32, state[name].shape[1]), 7.0)])
    padded = tmp_path / "padded" / "full_weights.pt"
    padded.parent.mkdir()
    torch.save(state, padded)
    out = tmp_path / "hf"
    convert(padded, out, base_model=ckpt.base_dir, dtype="fp16")
    assert_bit_exact(read_output(out), state_dict_of(ckpt.model), torch.float16)
    assert any("vocab padding rows" in w for w in manifest(out)["warnings"])
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float16"


class _Hooks(DirectHooks):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []
        self.alive_checks = 0

    def progress(self, done_bytes: int, total_bytes: int) -> None:
        self.seen.append((done_bytes, total_bytes))

    def check_alive(self) -> None:
        self.alive_checks += 1  # once before writing, then after each shard
        if self.alive_checks == 3:
            raise LeaseLostError("lease lost")


def test_progress_per_shard_and_lost_lease_publishes_nothing(
    ckpts: dict[str, WrittenCkpt], tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    hooks = _Hooks()
    request = ConvertRequest(source=ckpts["llama"].step_dir, output=out, max_shard_bytes=20_000)
    with pytest.raises(LeaseLostError):
        convert_checkpoint(request, hooks)
    assert not out.exists()
    done = [seen[0] for seen in hooks.seen]
    assert done == sorted(done) and len(set(done)) == 2 and done[-1] < hooks.seen[-1][1]
