"""deploy/ckptd.service through `systemd-analyze verify` (CI installs systemd, see .ci/run).

The unit's ExecStart (/opt/ckptd/.venv/bin/ckptd) and its User do not exist on a build machine, so a
copy whose ExecStart is this venv's real `ckptd` is verified; any finding other than the missing user
fails the test. `verify` exits 0 even for unknown keys, so its output is what is checked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "deploy" / "ckptd.service"
INSTALLED_BINARY = "/opt/ckptd/.venv/bin/ckptd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (.ci/run installs the systemd package)"
)


def findings(unit_text: str, where: Path) -> list[str]:
    """What `systemd-analyze verify` reports for the unit, minus the user that only the host lacks."""
    where.mkdir()
    path = where / "ckptd.service"
    venv_binary = Path(sys.executable).with_name("ckptd")
    assert venv_binary.is_file(), f"{venv_binary}: the venv has no ckptd script"
    path.write_text(unit_text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={venv_binary} "))
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    unrelated = [line for line in lines if "ckptd" not in line.lower() or "user" not in line.lower()]
    if done.returncode != 0:
        unrelated.append(f"exit status {done.returncode}")
    return unrelated


def test_unit_file_verifies_clean(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BINARY} run --config /etc/ckptd/ckptd.toml\n" in text
    assert findings(text, tmp_path / "unit") == []


def test_unit_keeps_the_settings_the_daemon_relies_on() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify"  # READY=1 after the first scan
    assert settings["NotifyAccess"] == "main"  # only the supervisor; workers never talk to systemd
    assert int(settings["WatchdogSec"]) > 0
    assert settings["KillMode"] == "mixed" and settings["KillSignal"] == "SIGTERM"
    # grace_seconds in deploy/ckptd.toml is 300; systemd must not SIGKILL the workers before that.
    assert int(settings["TimeoutStopSec"]) >= 300 + 30


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = (
        UNIT.read_text()
        .replace("WatchdogSec=", "WatchdogSecs=")
        .replace("Restart=on-failure", "Restart=often")
    )
    problems = findings(broken, tmp_path / "broken")
    assert any("WatchdogSecs" in line for line in problems), problems
    assert any("restart" in line.lower() for line in problems), problems
