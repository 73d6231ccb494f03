"""Post-conversion hooks: real subprocesses, real process groups, real timeouts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ckptd.service.hooks import expand, hook_environment, run_hook

FIELDS: dict[str, object] = {
    "job_id": 7,
    "output": Path("/data/hf/exp/global_step_10"),
    "source": "/data/runs/exp/checkpoints/global_step_10",
    "experiment": "exp",
    "step": 10,
    "format": "fsdp",
}


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies awaiting a reaper do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_expand_substitutes_job_fields_in_every_argument() -> None:
    argv = ["/opt/eval.sh", "{output}", "--name={experiment}-{step}", "job{job_id}", "plain"]
    assert expand(argv, FIELDS) == [
        "/opt/eval.sh",
        "/data/hf/exp/global_step_10",
        "--name=exp-10",
        "job7",
        "plain",
    ]


def test_expand_rejects_an_unknown_field() -> None:
    with pytest.raises(KeyError):
        expand(["{nope}"], FIELDS)


def test_environment_carries_job_fields_and_keeps_the_daemon_environment() -> None:
    env = hook_environment(FIELDS)
    assert env["CKPTD_JOB_OUTPUT"] == "/data/hf/exp/global_step_10"
    assert env["CKPTD_JOB_STEP"] == "10"
    assert env["CKPTD_JOB_ID"] == "7" and "CKPTD_JOB_JOB_ID" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_success_sees_arguments_and_environment(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    script = (
        "import os, sys; "
        "open(sys.argv[1], 'w').write(sys.argv[2] + '|' + os.environ['CKPTD_JOB_EXPERIMENT']); "
        "print('evaluated')"
    )
    result = run_hook([sys.executable, "-c", script, str(marker), "{output}"], FIELDS, timeout=30)
    assert result.ok and result.exit_code == 0 and not result.timed_out
    assert marker.read_text() == "/data/hf/exp/global_step_10|exp"
    assert result.output_tail == "evaluated\n"
    assert result.as_dict()["summary"] == "hook ok"


def test_failure_keeps_exit_code_and_the_tail_of_stdout_and_stderr() -> None:
    script = "import sys; print('x' * 10000); print('boom', file=sys.stderr); sys.exit(3)"
    result = run_hook([sys.executable, "-c", script], FIELDS, timeout=30)
    assert not result.ok and result.exit_code == 3 and not result.timed_out
    assert result.output_tail.endswith("boom\n")
    assert len(result.output_tail) == 4000
    assert result.summary() == "hook failed (exit 3)"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell leads its own group; the background sleep is in that group and outlives no one.
    script = f"sleep 60 & echo $$ $! > {pids}; echo started; sleep 60"
    started = time.monotonic()
    result = run_hook(["/bin/sh", "-c", script], FIELDS, timeout=1.0)
    assert time.monotonic() - started < 10
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.output_tail == "started\n"
    assert result.summary() == "hook timed out after 1s"
    leader, child = (int(pid) for pid in pids.read_text().split())
    assert leader != os.getpgid(0)
    # SIGKILL is delivered at once, but a dying process lingers a moment before it turns zombie.
    deadline = time.monotonic() + 5
    while live_members(leader) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live_members(leader) == [], f"group {leader} outlived the timeout (child {child})"


def test_a_missing_program_is_a_failed_hook_not_a_crash() -> None:
    result = run_hook(["/nonexistent/eval.sh", "{output}"], FIELDS, timeout=5)
    assert result.argv == ["/nonexistent/eval.sh", "/data/hf/exp/global_step_10"]
    assert (result.exit_code, result.timed_out) == (None, False)
    assert "cannot start '/nonexistent/eval.sh'" in result.output_tail
    assert not result.ok
