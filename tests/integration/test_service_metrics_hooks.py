"""Prometheus metrics over real HTTP during a real conversion, and post-conversion hooks that succeed,
fail and time out, seen through `ckptd status` like an operator would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_harness import REPO_ROOT, DaemonProcess, Site, wait_for
from tests.unit.test_service_hooks import live_members

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]

HOOK_TIMEOUT = 2.0
# One real hook script whose behaviour depends on the experiment it is called for.
HOOK_SCRIPT = """\
output=$1 experiment=$2 marks=$3
case "$experiment" in
  ok)   echo "$output|$CKPTD_JOB_OUTPUT|$CKPTD_JOB_EXPERIMENT|$CKPTD_JOB_STEP" \\
          "$CKPTD_JOB_FORMAT|$CKPTD_JOB_ID" > "$marks/ok.txt"
        ls "$output" > "$marks/ok-listing.txt"
        echo "evaluated $experiment" ;;
  fail) echo "eval crashed: CUDA error" >&2; exit 3 ;;
  slow) sleep 300 & echo $$ $! > "$marks/slow.pids"; echo "slow started"; sleep 300 ;;
esac
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None  # not listening yet
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def jobs_in(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], state: str) -> float:
    return metrics[("ckptd_jobs", (("state", state),))]


def ckptd_status(site: Site, *args: str) -> subprocess.Popen[str]:
    """`ckptd status` started, not waited for: the table and the JSON are asked for at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "ckptd", "status", "--config", str(site.config), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "300"},
        stdout=subprocess.PIPE,
        text=True,
    )


def output_of(process: subprocess.Popen[str]) -> str:
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return stdout


def test_metrics_follow_a_conversion_and_hooks_succeed_fail_and_time_out(tmp_path: Path) -> None:
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(HOOK_SCRIPT)
    site = Site(tmp_path, settings={"metrics": {"listen": f"127.0.0.1:{port}"}})
    site.write_config(
        on_done=["/bin/sh", str(script), "{output}", "{experiment}", str(marks)], hook_timeout=HOOK_TIMEOUT
    )
    site.write_step("ok", 1)
    with DaemonProcess(site) as daemon:
        queued = wait_for(lambda: (m := scrape(port)) and jobs_in(m, "queued") == 1 and m, 60, "queued=1")
        assert jobs_in(queued, "done") == 0
        metrics = wait_for(lambda: (m := scrape(port)) and jobs_in(m, "done") == 1 and m, 90, "done=1")
        assert jobs_in(metrics, "queued") == 0 and jobs_in(metrics, "running") == 0
        fsdp = (("format", "fsdp"),)
        assert metrics[("ckptd_conversion_duration_seconds_count", fsdp)] == 1
        assert metrics[("ckptd_conversion_duration_seconds_sum", fsdp)] > 0
        assert metrics[("ckptd_conversion_duration_seconds_bucket", (*fsdp, ("le", "+Inf")))] == 1
        assert metrics[("ckptd_bytes_read_total", fsdp)] > 0
        assert metrics[("ckptd_bytes_written_total", fsdp)] > 0
        assert metrics[("ckptd_output_free_bytes", (("root", str(site.out)),))] > 0
        assert metrics[("ckptd_last_scan_timestamp_seconds", ())] > 0

        site.write_step("fail", 1)
        site.write_step("slow", 1)
        wait_for(lambda: all(j.result and "hook" in j.result for j in site.jobs()) and len(site.jobs()) == 3,
                 60, "three hooks recorded")  # fmt: skip
        assert daemon.process.poll() is None
        table_cli, json_cli = ckptd_status(site), ckptd_status(site, "--json")
        table = output_of(table_cli)
        report = {j["experiment"]: j for j in json.loads(output_of(json_cli))["jobs"]}
        assert daemon.terminate() == 0

    ok, fail, slow = report["ok"], report["fail"], report["slow"]
    assert {ok["state"], fail["state"], slow["state"]} == {"done"}
    output = str(site.output_of("ok", 1))
    job_id = ok["id"]
    assert (marks / "ok.txt").read_text() == f"{output}|{output}|ok|1 fsdp|{job_id}\n"
    assert "ckptd.json" in (marks / "ok-listing.txt").read_text(), (
        "the hook ran before the output was published"
    )
    assert ok["hook"] == {
        "ok": True,
        "summary": "hook ok",
        "exit_code": 0,
        "timed_out": False,
        "output_tail": "evaluated ok\n",
    }
    assert fail["hook"]["ok"] is False and fail["hook"]["exit_code"] == 3
    assert fail["hook"]["output_tail"] == "eval crashed: CUDA error\n"
    assert slow["hook"]["timed_out"] is True and slow["hook"]["exit_code"] is None
    assert slow["hook"]["output_tail"] == "slow started\n"
    leader, _child = (int(pid) for pid in (marks / "slow.pids").read_text().split())
    assert live_members(leader) == [], "processes of the timed-out hook survived"
    assert "job.lease_lost" not in daemon.log(), "a hook running after the publish was seen as lease loss"
    assert "(hook failed (exit 3))" in table and "(hook timed out after 2s)" in table
