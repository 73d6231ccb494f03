"""Architecture tables: registry errors, and expected shapes equal to real transformers files."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig

from ckptd.errors import UnsupportedArchitectureError
from ckptd.models import REGISTRY, architecture_for, dims_from_config, expected_shapes
from tests.factories.megatron import file_state
from tests.factories.tiny_hf import KINDS, build_model, save_base_model


def test_unknown_and_not_yet_supported_types() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="supported: llama, mistral, qwen2, qwen2_moe"):
        architecture_for("gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="not supported yet"):
        architecture_for("deepseek_v3")
    assert set(REGISTRY) == {"qwen2", "qwen3", "llama", "mistral", "qwen2_moe", "qwen3_moe"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_expected_shapes_match_saved_files(tmp_path: Path, kind: str) -> None:
    base = save_base_model(build_model(kind), tmp_path / kind)
    config = AutoConfig.from_pretrained(base).to_dict()
    shapes = expected_shapes(architecture_for(config["model_type"]), dims_from_config(config))
    assert shapes == {k: tuple(v.shape) for k, v in file_state(base).items()}
