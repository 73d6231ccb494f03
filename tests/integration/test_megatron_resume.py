"""A conversion killed with SIGKILL mid-way resumes: shards already written are kept untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckptd.convert.api import ConvertRequest
from ckptd.convert.megatron.converter import MEMORY_ENV
from ckptd.convert.pipeline import convert_checkpoint
from ckptd.convert.writer import PROGRESS_NAME
from ckptd.verify.manifest import read_manifest
from tests.factories.megatron import MegatronLayout, assert_same_weights, make_checkpoint

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pathlib import Path
from ckptd.convert.api import ConvertRequest
from ckptd.convert.pipeline import convert_checkpoint
src, out, base = map(Path, sys.argv[1:4])
convert_checkpoint(ConvertRequest(source=src, output=out, base_model=base, dtype="keep", threads=1))
"""


def _kill_after_first_shard(process: subprocess.Popen[bytes], staging: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (staging / PROGRESS_NAME).exists():
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=30)


def test_killed_conversion_resumes_keeping_written_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = MegatronLayout(tp=2, pp=2)
    overrides = {"num_hidden_layers": 12, "hidden_size": 128, "intermediate_size": 512, "head_dim": 32}
    base, step_dir = make_checkpoint(tmp_path, "qwen2", layout, **overrides)
    out = tmp_path / "hf"
    staging = tmp_path / "hf.partial"
    env = {**os.environ, MEMORY_ENV: "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(step_dir), str(out), str(base)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_after_first_shard(process, staging)
    assert process.returncode == -signal.SIGKILL, "conversion finished before it could be killed"
    assert not out.exists()
    progress = json.loads((staging / PROGRESS_NAME).read_text())
    written = {s["filename"]: (staging / s["filename"]).stat() for s in progress["shards"]}
    total = int(next(iter(written)).split("-of-")[1].split(".")[0])
    assert 0 < len(written) < total

    monkeypatch.setenv(MEMORY_ENV, "1")
    convert_checkpoint(ConvertRequest(source=step_dir, output=out, base_model=base, dtype="keep", threads=1))
    for name, before in written.items():
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert sorted(read_manifest(out)["extra"]["resumed_shards"]) == sorted(written)
    assert len(read_manifest(out)["shards"]) == total
    assert_same_weights(base, out)
