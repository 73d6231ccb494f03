"""``ckptd demo``: a synthetic RLinf-style experiment converted by the real daemon, end to end."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ckptd.config import (
    Config,
    DatabaseConfig,
    LogConfig,
    QueueConfig,
    ScanConfig,
    WatchConfig,
    WorkersConfig,
)
from ckptd.demo_model import build_base_model, trained_state, write_fsdp_step

DEMO_STEPS = (10, 20)
TIMEOUT_S = 300.0


def demo_config(root: Path) -> Config:
    return Config(
        database=DatabaseConfig(url=f"sqlite:///{root / 'state' / 'ckptd.db'}"),
        watch=[WatchConfig(root=root / "runs", output=root / "hf", base_model=root / "base", dtype="bf16")],
        scan=ScanConfig(interval=2.0, mode="auto", settle_seconds=0.5),
        workers=WorkersConfig(count=2, lease_seconds=30.0, heartbeat_seconds=5.0, poll_seconds=0.5),
        queue=QueueConfig(reap_interval=5.0),
        log=LogConfig(format="console"),
    )


def _write_later(experiment: Path, model: Any, step: int, delay: float) -> threading.Thread:
    """A second checkpoint appears while the daemon runs, written in the trainer's order."""

    def write() -> None:
        time.sleep(delay)
        write_fsdp_step(experiment / "checkpoints" / f"global_step_{step}", trained_state(model, step))

    thread = threading.Thread(target=write, name="demo-trainer", daemon=True)
    thread.start()
    return thread


def _all_done(expected: int, deadline: float) -> Any:
    def check(repo: Any) -> bool:
        jobs = repo.list_jobs()
        finished = [j for j in jobs if str(j.state) in ("done", "dead", "cancelled")]
        return (len(jobs) >= expected and len(finished) == len(jobs)) or time.monotonic() > deadline

    return check


def _check_logits(output: Path, state: dict[str, torch.Tensor]) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    converted = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(output), dtype=torch.float32)
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    reference.eval()
    ids = torch.randint(4, converted.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((converted(ids).logits - reference(ids).logits).abs().max())


def run_demo(keep: Path | None = None) -> int:
    from ckptd.cli_output import print_table
    from ckptd.daemon import Daemon
    from ckptd.logging import configure_logging

    console = Console()
    root = keep or Path(tempfile.mkdtemp(prefix="ckptd-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    configure_logging("info", "console")
    console.print(f"[bold]ckptd demo[/] in {root}")
    model = build_base_model(root / "base")
    experiment = root / "runs" / "demo-exp"
    first = trained_state(model, DEMO_STEPS[0])
    write_fsdp_step(experiment / "checkpoints" / f"global_step_{DEMO_STEPS[0]}", first)
    writer = _write_later(experiment, model, DEMO_STEPS[1], delay=3.0)
    config = demo_config(root)
    daemon = Daemon(config, stop_when=_all_done(len(DEMO_STEPS), time.monotonic() + TIMEOUT_S))
    daemon.run()
    writer.join()
    jobs = daemon.repo.list_jobs()
    print_table(jobs, daemon.repo.counts(), console)
    done = [j for j in jobs if str(j.state) == "done"]
    if len(done) != len(DEMO_STEPS):
        console.print("[red]demo failed:[/] not every checkpoint was converted")
        return 1
    output = Path(next(j.output for j in done if j.step == DEMO_STEPS[0]))
    delta = _check_logits(output, first)
    console.print(f"HF output: {output.parent}  (max |logit diff| vs. the trained weights: {delta:g})")
    if keep is None:
        console.print(f"(kept for inspection; remove with: rm -r {root})")
    return 0 if delta == 0.0 else 1


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
