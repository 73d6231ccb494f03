"""Which FSDP files are read, base-model discovery, and the DCP metadata allowlist (no checkpoints)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest

from ckptd.convert.api import ConvertRequest, SourceInfo
from ckptd.convert.base_model import find_trainer_config, resolve_base_model
from ckptd.convert.fsdp.converter import FsdpConverter
from ckptd.convert.fsdp.dcp import read_metadata
from ckptd.convert.fsdp.layout import locate, step_of
from ckptd.errors import ConfigError, ConversionError, IncompleteCheckpointError, UnsafePickleError


def _zip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    return path


def _step(tmp_path: Path, step: int = 3) -> Path:
    actor = tmp_path / "exp" / "checkpoints" / f"global_step_{step}" / "actor"
    actor.mkdir(parents=True)
    return actor


def test_prefers_complete_dcp_and_accepts_the_docs_spelling(tmp_path: Path) -> None:
    actor = _step(tmp_path)
    _zip(actor / "model_state_dict" / "full_weigths.pt")
    (actor / "dcp_checkpoint").mkdir()
    (actor / "dcp_checkpoint" / "__0_0.distcp").write_bytes(b"x")
    files = locate(actor.parent)
    assert files is not None and files.reader == "full_weights.pt"  # DCP lacks .metadata
    (actor / "dcp_checkpoint" / ".metadata").write_bytes(b"x")
    files = locate(actor.parent)
    assert files is not None and files.reader == "dcp" and files.full_pt is not None
    info = FsdpConverter().probe(actor.parent)
    assert (
        info is not None
        and info.step == 3
        and info.details["readers_available"] == ["dcp", "full_weights.pt"]
    )


def test_incomplete_and_unsupported_and_foreign(tmp_path: Path) -> None:
    actor = _step(tmp_path)
    (actor / "dcp_checkpoint").mkdir()
    (actor / "dcp_checkpoint" / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(IncompleteCheckpointError):
        locate(actor)
    other = _step(tmp_path, 4)
    (other / "local_shard_checkpoint").mkdir()
    with pytest.raises(ConversionError, match="local-shard"):
        locate(other.parent)
    megatron = _step(tmp_path, 5)
    (megatron / "latest_checkpointed_iteration.txt").write_text("5")
    assert locate(megatron.parent) is None
    assert step_of(Path("/a/global_step_12/actor/x.pt")) == 12 and step_of(Path("/a/best_model")) is None


def test_metadata_allowlist_refuses_and_names_the_global(tmp_path: Path) -> None:
    (tmp_path / ".metadata").write_bytes(pickle.dumps(Path))  # a class, not an instance: refused
    with pytest.raises(UnsafePickleError, match=r"pathlib\.Path"):
        read_metadata(tmp_path)
    (tmp_path / ".metadata").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConversionError, match="not DCP Metadata"):
        read_metadata(tmp_path)


def _hf(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return path


def _info(actor: Path) -> SourceInfo:
    return SourceInfo("fsdp", actor / "dcp_checkpoint", "dcp")


def test_base_model_order_explicit_then_trainer_config_then_old_layout(tmp_path: Path) -> None:
    actor = _step(tmp_path)
    request = ConvertRequest(source=actor, output=tmp_path / "out")
    with pytest.raises(ConfigError, match="--base-model"):
        resolve_base_model(request, _info(actor))
    old = _hf(actor / "huggingface_model")
    assert resolve_base_model(request, _info(actor)) == old
    base = _hf(tmp_path / "models" / "base")
    tb = tmp_path / "tensorboard" / "run"  # <log_path>/tensorboard/<suffix>, experiment under log_path
    tb.mkdir(parents=True)
    (tb / "config.yaml").write_text(
        f"runner:\n  experiment_name: exp\nactor:\n  model:\n    model_path: {base}\n"
    )
    assert resolve_base_model(request, _info(actor)) == base
    assert find_trainer_config(actor) is not None
    explicit = _hf(tmp_path / "explicit")
    given = ConvertRequest(source=actor, output=tmp_path / "out", base_model=explicit)
    assert resolve_base_model(given, _info(actor)) == explicit


def test_trainer_config_naming_a_missing_path_is_reported(tmp_path: Path) -> None:
    actor = _step(tmp_path)
    tb = tmp_path / "exp" / "tensorboard" / "x"
    tb.mkdir(parents=True)
    (tb / "config.yaml").write_text("actor:\n  model:\n    model_path: /nowhere/model\n")
    request = ConvertRequest(source=actor, output=tmp_path / "out")
    with pytest.raises(ConfigError, match="/nowhere/model"):
        resolve_base_model(request, _info(actor))


def test_megatron_torch_dist_iter_dir_is_not_claimed(tmp_path: Path) -> None:
    iter_dir = tmp_path / "actor" / "iter_0000010"
    iter_dir.mkdir(parents=True)
    for name in (".metadata", "__0_0.distcp", "common.pt", "metadata.json"):
        (iter_dir / name).write_bytes(b"x")
    assert locate(iter_dir) is None
