"""The disk guard with a real daemon: a reserve larger than the free space holds the job in `waiting`
with its reason in `ckptd status`; restarted with a small reserve, the same job converts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_harness import REPO_ROOT, DaemonProcess, Site, states, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]


def ckptd_status(site: Site, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "ckptd", "status", "--config", str(site.config), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _held_table(site: Site) -> str | None:
    table = ckptd_status(site)
    return table if "│ waiting │" in table else None


def test_job_waits_for_disk_space_then_converts_with_a_smaller_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = Site(tmp_path, settings={"disk": {"recheck_seconds": 0.5, "reserve_bytes": 1000}})
    site.write_step("exp", 3)
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setenv("CKPTD_DISK_RESERVE_BYTES", str(free * 10))  # the environment beats the file
    with DaemonProcess(site, "short") as daemon:
        wait_for(lambda: states(site) == {3: "waiting"}, 90, "the job held for disk space")
        repo = site.repo()
        job = site.jobs()[0]
        # Tried again after recheck_seconds and held again: still short, still not an attempt.
        wait_for(lambda: [e.event for e in repo.events(job.id)].count("held") >= 2, 30, "a second hold")
        # Every recheck_seconds the job is claimed (running) for a moment, then held again.
        table = wait_for(lambda: _held_table(site), 30, "a status table showing the held job")
        assert daemon.terminate() == 0
    job = site.jobs()[0]
    assert str(job.state) == "waiting"
    assert job.last_error is not None
    assert job.last_error.startswith(f"{site.out / 'exp'}: waiting for disk space: needs ")
    assert job.last_error.endswith("free; free space or lower disk.reserve_bytes")
    assert f"{free * 10 / 1e9:.2f} GB reserve" in job.last_error
    # Free space moves while the table is printed; everything before "GB free" does not.
    assert "│ waiting │" in table and job.last_error.rsplit(",", 1)[0] in table
    assert "free space or lower disk.reserve_bytes" in table
    held = [json.loads(line) for line in daemon.log().splitlines() if "job.waiting_for_disk" in line]
    assert held and all(entry["needed"] > 0 for entry in held), "the plan estimated nothing to write"
    assert json.loads(ckptd_status(site, "--json"))["jobs"][0]["error"] == job.last_error
    assert not site.output_of("exp", 3).exists() and not site.out.exists()

    monkeypatch.setenv("CKPTD_DISK_RESERVE_BYTES", "1000000")
    with DaemonProcess(site, "enough") as daemon:
        wait_for(lambda: states(site) == {3: "done"}, 90, "the conversion once the reserve fits")
        assert daemon.terminate() == 0
    job = site.jobs()[0]
    assert job.attempts == 1, "holds were counted as attempts"
    assert (site.output_of("exp", 3) / "model.safetensors.index.json").is_file()
