"""Run the real daemon (``python -m ckptd run``) as a subprocess against real files and a real DB."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptd.demo_model import build_base_model, trained_state, write_fsdp_step
from ckptd.queue.engine import make_engine
from ckptd.queue.records import Job
from ckptd.queue.repository import JobRepository
from ckptd.queue.schema import upgrade

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Site:
    """A scratch world: a base model, a watched runs root, an output root, a DB and a config file."""

    root: Path
    hidden: int = 64
    layers: int = 4
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: Any = None

    def __post_init__(self) -> None:
        self.runs = self.root / "runs"
        self.out = self.root / "hf"
        self.db = self.root / "state" / "ckptd.db"
        self.runs.mkdir(parents=True)
        self.model = build_base_model(self.root / "base", hidden=self.hidden, layers=self.layers)
        self.config = self.root / "ckptd.toml"
        self.write_config()

    def write_config(self, **extra_watch: Any) -> None:
        sections: dict[str, dict[str, Any]] = {
            "database": {"url": f"sqlite:///{self.db}"},
            "scan": {"interval": 1.0, "mode": "auto", "settle_seconds": 0.3},
            "workers": {
                "count": 1,
                "lease_seconds": 4.0,
                "heartbeat_seconds": 1.0,
                "poll_seconds": 0.2,
                "grace_seconds": 5.0,
            },
            "queue": {"reap_interval": 0.5, "backoff_base": 0.2, "backoff_cap": 1.0, "max_attempts": 5},
            "log": {"format": "json"},
        }
        for name, values in self.settings.items():
            sections.setdefault(name, {}).update(values)
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
        watch = {
            "root": str(self.runs),
            "output": str(self.out),
            "base_model": str(self.root / "base"),
            "dtype": "bf16",
            **extra_watch,
        }
        lines.append("[[watch]]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in watch.items())
        self.config.write_text("\n".join(lines) + "\n")

    def step_dir(self, experiment: str, step: int) -> Path:
        return self.runs / experiment / "checkpoints" / f"global_step_{step}"

    def write_step(self, experiment: str, step: int) -> dict[str, torch.Tensor]:
        state = trained_state(self.model, step)
        write_fsdp_step(self.step_dir(experiment, step), state)
        return state

    def output_of(self, experiment: str, step: int) -> Path:
        return self.out / experiment / f"global_step_{step}"

    def repo(self) -> JobRepository:
        engine = make_engine(f"sqlite:///{self.db}")
        upgrade(engine)
        return JobRepository(engine)

    def jobs(self) -> list[Job]:
        if not self.db.exists():
            return []
        return self.repo().list_jobs()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class DaemonProcess:
    """``python -m ckptd run`` in its own process group, its log captured to a file."""

    def __init__(self, site: Site, name: str = "daemon") -> None:
        self.log_path = site.root / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CKPTD_CONFIG": str(site.config)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ckptd", "run", "--config", str(site.config)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill_group(self) -> None:
        """kill -9 of the daemon and all its workers, like a machine losing power."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill_group()


def worker_pids(site: Site) -> list[int]:
    return [
        w.pid
        for w in site.repo().list_workers()
        if w.stopped_at is None and not w.id.startswith("supervisor-")
    ]


def states(site: Site) -> dict[int, str]:
    return {job.step: str(job.state) for job in site.jobs()}
