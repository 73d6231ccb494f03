"""Bad FSDP input: each is one clear line, a non-zero exit, and nothing published."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ckptd.cli import app
from ckptd.errors import (
    CkptdError,
    ConfigError,
    ConversionError,
    UnsafePickleError,
    UnsupportedArchitectureError,
)
from tests.factories.fsdp import WrittenCkpt, standard_checkpoints
from tests.integration.fsdp_helpers import convert


@pytest.fixture(scope="module")
def ckpts() -> dict[str, WrittenCkpt]:
    return standard_checkpoints()


def _fails(source: Path, out: Path, error: type[CkptdError], *needles: str, **options: object) -> str:
    with pytest.raises(error) as info:
        convert(source, out, **options)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not out.exists()
    return message


def _lone_copy(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "lone" / path.name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(path, target)
    return target


def test_truncated_pt(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    ckpt = ckpts["qwen2"]
    pt = _lone_copy(ckpt.full_weights, tmp_path)
    with pt.open("r+b") as handle:
        handle.truncate(pt.stat().st_size // 2)
    _fails(pt, tmp_path / "out", ConversionError, str(pt), "truncated", base_model=ckpt.base_dir)


def test_pt_needing_a_global_off_the_allowlist(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    pt = tmp_path / "lone" / "full_weights.pt"
    pt.parent.mkdir()
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "args": argparse.Namespace(lr=1)}, pt)
    base = ckpts["qwen2"].base_dir
    _fails(pt, tmp_path / "out", UnsafePickleError, "argparse.Namespace", str(pt), base_model=base)


def test_dcp_missing_a_shard_file_names_it(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    ckpt = ckpts["qwen3"]
    step = tmp_path / "run" / "checkpoints" / "global_step_11"
    shutil.copytree(ckpt.dcp_dir, step / "actor" / "dcp_checkpoint")
    (step / "actor" / "dcp_checkpoint" / "__1_0.distcp").unlink()
    out = tmp_path / "out"
    _fails(step, out, ConversionError, "__1_0.distcp", "missing", base_model=ckpt.base_dir)


def test_dcp_metadata_with_an_unsafe_global_is_refused(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    dcp_dir = tmp_path / "dcp_checkpoint"
    shutil.copytree(ckpts["qwen2"].dcp_dir, dcp_dir)
    (dcp_dir / ".metadata").write_bytes(pickle.dumps(os.system))
    out = tmp_path / "out"
    _fails(dcp_dir, out, UnsafePickleError, "posix.system", base_model=ckpts["qwen2"].base_dir)


def test_keys_that_do_not_fit_the_base_are_listed(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    # qwen2 has q/k/v biases that llama lacks.
    message = _fails(
        ckpts["qwen2"].step_dir,
        tmp_path / "out",
        ConversionError,
        "unexpected",
        "self_attn.k_proj.bias",
        base_model=ckpts["llama"].base_dir,
    )
    assert "(+" in message  # more than the first few are counted, not listed


def test_shapes_that_do_not_fit_the_base_are_listed(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(ckpts["qwen2"].base_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    _fails(
        ckpts["qwen2"].step_dir, tmp_path / "out", ConversionError, "mlp.down_proj.weight", base_model=base
    )


def test_untied_checkpoint_with_a_tied_base_is_refused(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(ckpts["qwen2"].base_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    _fails(ckpts["qwen2"].step_dir, tmp_path / "out", ConversionError, "lm_head.weight", base_model=base)


def test_moe_base_is_refused_clearly(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(ckpts["qwen2"].base_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_moe", "num_experts": 4}))
    out = tmp_path / "out"
    _fails(ckpts["qwen2"].step_dir, out, UnsupportedArchitectureError, "mixture-of-experts", base_model=base)


def test_no_base_model_says_how_to_give_one(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    pt = _lone_copy(ckpts["qwen2"].full_weights, tmp_path)
    _fails(pt, tmp_path / "out", ConfigError, "--base-model")


def test_cli_bad_input_exits_non_zero_with_one_line(ckpts: dict[str, WrittenCkpt], tmp_path: Path) -> None:
    pt = _lone_copy(ckpts["qwen2"].full_weights, tmp_path)
    with pt.open("r+b") as handle:
        handle.truncate(100)
    out = tmp_path / "out"
    args = ["convert", str(pt), "--out", str(out), "--base-model", str(ckpts["qwen2"].base_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    # Log lines may precede it (logging is configured by the CLI's owner); the error is one line.
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and str(pt) in errors[0], result.output
    assert not out.exists()
