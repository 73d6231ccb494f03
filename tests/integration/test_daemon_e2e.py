"""The daemon end to end: real `ckptd run` processes, real files, real SQLite, real conversions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ckptd.demo_model import trained_state, write_fsdp_step
from tests.integration.daemon_harness import (
    REPO_ROOT,
    DaemonProcess,
    Site,
    states,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.slow


def assert_exact(output: Path, state: dict[str, torch.Tensor]) -> None:
    """Every tensor bit-exact against what the trainer saved, and identical logits through transformers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    index = json.loads((output / "model.safetensors.index.json").read_text())
    written: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        written.update(load_file(output / shard))
    expected = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied: written once
    assert sorted(written) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(written[name], tensor), name
    converted = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(output), dtype=torch.float32)
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    ids = torch.randint(4, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, reference.eval()(ids).logits)


class OutputWatcher:
    """Polls output dirs the whole time: whenever one exists it must be complete (atomic publish)."""

    def __init__(self, outputs: list[Path]) -> None:
        self.outputs = outputs
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for out in self.outputs:
                if out.exists() and not (out / "ckptd.json").exists():
                    self.violations.append(f"{out} visible without ckptd.json")

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.violations


def finished_events(site: Site) -> dict[int, int]:
    repo = site.repo()
    return {job.step: sum(e.event == "finished" for e in repo.events(job.id)) for job in repo.list_jobs()}


def test_converts_existing_and_new_checkpoints_and_waits_for_incomplete(tmp_path: Path) -> None:
    site = Site(tmp_path)
    first = site.write_step("exp-a", 10)
    # A step still being written: shards are there, the atomic .metadata is not yet.
    staged = tmp_path / "staged"
    third = trained_state(site.model, 30)
    write_fsdp_step(staged, third)
    pending = site.step_dir("exp-a", 30) / "actor" / "dcp_checkpoint"
    pending.mkdir(parents=True)
    for shard in (staged / "actor" / "dcp_checkpoint").glob("*.distcp"):
        shutil.copy(shard, pending / shard.name)
    with DaemonProcess(site) as daemon:
        wait_for(lambda: states(site).get(10) == "done", 120, "the checkpoint present at start-up")
        second = site.write_step("exp-a", 20)
        wait_for(lambda: states(site).get(20) == "done", 60, "the checkpoint written while running")
        assert 30 not in states(site), "an incomplete checkpoint was queued"
        shutil.copy(staged / "actor" / "dcp_checkpoint" / ".metadata", pending / ".metadata")
        shutil.copytree(staged / "actor" / "model_state_dict", pending.parent / "model_state_dict")
        wait_for(lambda: states(site).get(30) == "done", 60, "the step once its marker appeared")
        assert daemon.terminate() == 0
    log = daemon.log()
    for event in ("checkpoint.detected", "job.enqueued", "job.claimed", "job.done", "daemon.stopped"):
        assert f'"event": "{event}"' in log, event
    for step, state in ((10, first), (20, second), (30, third)):
        assert_exact(site.output_of("exp-a", step), state)
    assert not list(site.out.rglob("*.partial")), "staging dirs left behind"


def _first_shard_written(site: Site, experiment: str, step: int) -> bool:
    staging = site.output_of(experiment, step).with_name(f"global_step_{step}.partial")
    return staging.is_dir() and any(staging.glob("model-*.safetensors"))


def test_worker_killed_mid_conversion_is_rerun_and_nothing_partial_is_visible(tmp_path: Path) -> None:
    site = Site(
        tmp_path, hidden=768, layers=24, settings={"workers": {"max_shard_size": 1_000_000, "threads": 1}}
    )
    state = site.model.state_dict()
    state = {k: v.clone() for k, v in state.items()}
    watcher = OutputWatcher([site.output_of("big", 5)])
    with DaemonProcess(site) as daemon:
        wait_for(lambda: worker_pids(site), 60, "a worker")
        write_fsdp_step(site.step_dir("big", 5), state, adam=False, full_weights=False)
        wait_for(lambda: _first_shard_written(site, "big", 5), 120, "the first output shard", interval=0.005)
        victim = site.jobs()[0]
        pid = next(w.pid for w in site.repo().list_workers() if w.id == victim.worker_id)
        signal_sent = subprocess.run(["kill", "-9", str(pid)], check=False).returncode
        assert signal_sent == 0
        assert not site.output_of("big", 5).exists()
        wait_for(lambda: states(site).get(5) == "done", 120, "the re-run after the lease expired")
        daemon.terminate()
    assert watcher.stop() == []
    job = site.jobs()[0]
    assert job.attempts == 2
    events = [e.event for e in site.repo().events(job.id)]
    assert "lease_expired" in events and events.count("finished") == 1
    assert "worker.died" in daemon.log()
    assert_exact(site.output_of("big", 5), state)


def test_a_paused_worker_whose_lease_was_taken_cannot_publish(tmp_path: Path) -> None:
    site = Site(
        tmp_path,
        hidden=768,
        layers=24,
        settings={
            "workers": {"count": 2, "max_shard_size": 1_000_000, "threads": 1},
            "queue": {"max_attempts": 50},
        },
    )
    state = {k: v.clone() for k, v in site.model.state_dict().items()}
    with DaemonProcess(site) as daemon:
        wait_for(lambda: len(worker_pids(site)) == 2, 60, "two workers")
        write_fsdp_step(site.step_dir("big", 7), state, adam=False, full_weights=False)
        wait_for(lambda: _first_shard_written(site, "big", 7), 120, "the first output shard", interval=0.005)
        first_owner = site.jobs()[0].worker_id
        pid = next(w.pid for w in site.repo().list_workers() if w.id == first_owner)
        subprocess.run(["kill", "-STOP", str(pid)], check=True)
        try:
            wait_for(lambda: site.jobs()[0].attempts >= 2, 60, "the lease taken over by another claim")
        finally:
            subprocess.run(["kill", "-CONT", str(pid)], check=True)
        wait_for(lambda: states(site).get(7) == "done", 120, "the conversion finished by the new owner")
        daemon.terminate()
    job = site.jobs()[0]
    assert job.worker_id != first_owner
    events = site.repo().events(job.id)
    assert [e.event for e in events].count("finished") == 1
    assert "job.lease_lost" in daemon.log()
    assert_exact(site.output_of("big", 7), state)


def test_daemon_killed_and_restarted_loses_nothing_and_converts_nothing_twice(tmp_path: Path) -> None:
    site = Site(tmp_path, settings={"workers": {"count": 2}})
    saved = {step: site.write_step("exp-k", step) for step in (1, 2, 3, 4)}
    with DaemonProcess(site, "first") as first:
        wait_for(lambda: "done" in states(site).values(), 120, "a first finished job")
        first.kill_group()
    done_before = {
        s: site.output_of("exp-k", s).stat().st_ino for s, st in states(site).items() if st == "done"
    }
    with DaemonProcess(site, "second") as second:
        wait_for(lambda: set(states(site).values()) == {"done"} and len(states(site)) == 4, 120, "all done")
        second.terminate()
    assert finished_events(site) == {1: 1, 2: 1, 3: 1, 4: 1}
    for step, inode in done_before.items():
        assert site.output_of("exp-k", step).stat().st_ino == inode, "a published output was redone"
    for step, state in saved.items():
        assert_exact(site.output_of("exp-k", step), state)


def test_corrupt_checkpoint_fails_with_one_line_reason_and_others_still_convert(tmp_path: Path) -> None:
    site = Site(tmp_path)
    good = site.write_step("good", 10)
    site.write_step("bad", 10)
    shard = next((site.step_dir("bad", 10) / "actor" / "dcp_checkpoint").glob("*.distcp"))
    with shard.open("r+b") as handle:  # cut into the model's bytes, not only the optimizer's
        handle.truncate(shard.stat().st_size // 20)
    with DaemonProcess(site) as daemon:
        wait_for(
            lambda: {j.experiment: str(j.state) for j in site.jobs()} == {"good": "done", "bad": "dead"},
            120,
            "good converted, bad dead",
        )
        assert daemon.process.poll() is None, "the daemon died"
        daemon.terminate()
    bad = next(j for j in site.jobs() if j.experiment == "bad")
    assert bad.last_error and "\n" not in bad.last_error
    assert ".distcp" in bad.last_error or "dcp_checkpoint" in bad.last_error
    assert not site.output_of("bad", 10).exists()
    assert_exact(site.output_of("good", 10), good)


def test_two_daemons_on_one_database_never_process_a_job_twice(tmp_path: Path) -> None:
    site = Site(tmp_path)
    saved = {step: site.write_step("shared", step) for step in (1, 2, 3, 4, 5, 6)}
    with DaemonProcess(site, "one") as one, DaemonProcess(site, "two") as two:
        wait_for(lambda: len(states(site)) == 6 and set(states(site).values()) == {"done"}, 180, "all done")
        one.terminate()
        two.terminate()
    assert finished_events(site) == dict.fromkeys(saved, 1)
    assert all(job.attempts == 1 for job in site.jobs())
    for step, state in saved.items():
        assert_exact(site.output_of("shared", step), state)


def test_status_json_schema(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.repo().enqueue(
        source="/x/global_step_3",
        output="/y/global_step_3",
        experiment="e",
        step=3,
        format="fsdp",
        watch_root="/x",
        options={},
    )
    result = subprocess.run(
        [sys.executable, "-m", "ckptd", "status", "--json", "--config", str(site.config)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(result.stdout)
    assert list(payload) == ["jobs"]
    (job,) = payload["jobs"]
    assert list(job) == [
        "id",
        "experiment",
        "step",
        "format",
        "state",
        "attempts",
        "source",
        "output",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "hook",
    ]
    assert job["state"] == "queued" and job["step"] == 3 and job["error"] is None


def test_daemon_converts_a_megatron_checkpoint(tmp_path: Path) -> None:
    from tests.factories.megatron import MegatronLayout, assert_same_weights, save_megatron
    from tests.factories.tiny_hf import logits_of, sample_input_ids

    site = Site(tmp_path)
    with DaemonProcess(site) as daemon:
        wait_for(lambda: worker_pids(site), 60, "a worker")
        # rank files first, tracker last, as Megatron's save_checkpoint does
        save_megatron(site.root / "base", site.step_dir("mg", 10), MegatronLayout(tp=2, pp=2))
        wait_for(lambda: states(site).get(10) == "done", 120, "the Megatron checkpoint converted")
        daemon.terminate()
    (job,) = site.jobs()
    assert job.format == "megatron"
    output = site.output_of("mg", 10)
    assert_same_weights(site.root / "base", output)
    ids = sample_input_ids(128)
    assert torch.equal(logits_of(output, ids), logits_of(site.root / "base", ids))
