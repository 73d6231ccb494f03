"""The weights_only allowlist loader: Megatron/OmegaConf/argparse args readable, anything else refused."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ckptd.convert.safe_load import Stub, plain, safe_load
from ckptd.errors import ConversionError, UnsafePickleError
from tests.factories.megatron import megatron_enums


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def _save(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "file.pt"
    torch.save(obj, path)
    return path


def test_namespace_args_with_megatron_enums_and_rng_state(tmp_path: Path) -> None:
    enums = megatron_enums()
    args = argparse.Namespace(
        num_layers=4,
        params_dtype=torch.bfloat16,
        model_type=enums["ModelType"].encoder_or_decoder,
        attention_backend=enums["AttnBackend"].auto,
        exit_signal=signal.SIGTERM,
    )
    rng = {"np_rng_state": np.random.RandomState(0).get_state(), "torch": torch.get_rng_state()}
    path = _save(tmp_path, {"args": args, "model": {"w": torch.ones(2)}, "rng_state": [rng]})
    state = safe_load(path)
    assert isinstance(state["args"], Stub)
    read = plain(state["args"])
    assert read["num_layers"] == 4 and read["params_dtype"] == torch.bfloat16 and read["model_type"] == 1
    assert torch.equal(state["model"]["w"], torch.ones(2))
    assert state["rng_state"][0]["np_rng_state"][0] == "MT19937"


def test_omegaconf_args_and_rerun_state(tmp_path: Path) -> None:
    enums = megatron_enums()
    config = OmegaConf.create(
        {"num_layers": 4, "stages": [1, 3], "nested": {"x": None}, "dt": "${torch.dtype:bf16}"}
    )
    config.model_type = enums["ModelType"].encoder_or_decoder
    rerun = {"mode": enums["RerunMode"].DISABLED, "sharded": {"state": enums["RerunState"].NOT_RUNNING_YET}}
    state = safe_load(_save(tmp_path, {"args": config, "rerun_state_machine": rerun}))
    read = plain(state["args"])
    assert read["num_layers"] == 4 and read["stages"] == [1, 3] and read["nested"] == {"x": None}
    assert read["dt"] == "${torch.dtype:bf16}" and read["model_type"] == 1
    assert plain(state["rerun_state_machine"])["mode"] == "disabled"


def test_stubs_run_no_code() -> None:
    stub = Stub("anything", key=1)
    stub.__setstate__({"a": 1})
    assert plain(stub) == {"a": 1}


def test_code_execution_gadget_is_refused_by_name(tmp_path: Path) -> None:
    path = _save(tmp_path, {"args": _Evil()})
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        safe_load(path)


def test_truncated_and_non_torch_files(tmp_path: Path) -> None:
    path = _save(tmp_path, {"model": {"w": torch.zeros(1000)}})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ConversionError, match="corrupt"):
        safe_load(path)
    path.write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="corrupt"):
        safe_load(path)
    with pytest.raises(ConversionError, match="not found"):
        safe_load(tmp_path / "missing.pt")
