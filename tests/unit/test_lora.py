"""LoRA settings, merge math and adapter config (formats.md §2.5, pitfalls.md 1-2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ckptd.convert import lora
from ckptd.errors import ConfigError, ConversionError


def test_merge_is_fp32_w_plus_scaled_ba() -> None:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=generator).to(torch.bfloat16)
    a, b = torch.randn(2, 5, generator=generator), torch.randn(6, 2, generator=generator)
    merged = lora.merge(w, a, b, 0.5)
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged, w.float() + 0.5 * (b @ a))
    assert w.dtype == torch.bfloat16  # the input is not modified
    with pytest.raises(ConversionError, match="do not fit"):
        lora.merge(w, a, b[:, :1], 1.0)


def test_scale_plain_and_rslora() -> None:
    plain = lora.LoraSettings(4, 16.0, False, "x", {})
    assert plain.scale(4) == 4.0 and plain.scale(8) == 2.0
    assert lora.LoraSettings(4, 16.0, True, "x", {}).scale(4) == 16.0 / math.sqrt(4)


def test_alpha_from_given_config_beats_trainer_and_warns_on_r_mismatch() -> None:
    settings, warnings = lora.resolve_settings(
        {"m": 4}, {"lora_alpha": 32, "r": 8, "use_rslora": True}, {"lora_alpha": 4, "origin": "t"}
    )
    assert (settings.alpha, settings.r, settings.use_rslora, settings.origin) == (
        32.0,
        4,
        True,
        "--lora-config",
    )
    assert any("r = 8" in w for w in warnings)


def test_alpha_fallback_is_r_with_warning_and_zero_alpha_refused() -> None:
    settings, warnings = lora.resolve_settings({"m": 8, "n": 8, "o": 2}, None, None)
    assert (settings.r, settings.alpha) == (8, 8.0) and "alpha = r" in warnings[0]
    with pytest.raises(ConversionError, match="no-op"):
        lora.resolve_settings({"m": 8}, {"lora_alpha": 0}, None)


def test_trainer_config_variants(tmp_path: Path) -> None:
    assert lora.trainer_lora_config({"actor": {"model": {"is_lora": False}}}) is None
    fresh = lora.trainer_lora_config({"actor": {"model": {"is_lora": True, "lora_rank": 32}}})
    assert fresh is not None and fresh["lora_alpha"] == 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"lora_alpha": 64, "r": 16}))
    model = {"is_lora": True, "lora_rank": 16, "lora_path": str(tmp_path)}
    from_path = lora.trainer_lora_config({"actor": {"model": model}})
    assert from_path is not None and from_path["lora_alpha"] == 64 and "lora_path" in from_path["origin"]


def test_read_adapter_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter_config"):
        lora.read_adapter_config(tmp_path / "nope.json")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(ConfigError, match="lora_alpha"):
        lora.read_adapter_config(tmp_path)


def test_adapter_files_carry_real_r_alpha_and_targets(tmp_path: Path) -> None:
    settings = lora.LoraSettings(4, 16.0, False, "x", {"lora_dropout": 0.1, "r": 99})
    modules = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    config = lora.adapter_config(settings, modules, "/out")
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 16.0, 0.1)
    assert config["target_modules"] == ["down_proj", "q_proj"] and config["peft_type"] == "LORA"
    assert lora.adapter_key(modules[0], "A") == f"base_model.model.{modules[0]}.lora_A.weight"
    assert lora.rank_pattern({"a": 4, "b": 8}, 4) == {"b": 8}
    shared = torch.zeros(4, 4)
    lora.write_adapter(tmp_path / "ad", {"x": shared, "y": shared}, config)
    assert set(load_file(tmp_path / "ad" / "adapter_model.safetensors")) == {"x", "y"}
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["lora_alpha"] == 16.0
