"""Post-conversion hooks: an argument list (no shell) run after a successful publish."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class HookResult:
    argv: list[str]
    exit_code: int | None
    timed_out: bool
    seconds: float
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def summary(self) -> str:
        if self.timed_out:
            return f"hook timed out after {self.seconds:.0f}s"
        return "hook ok" if self.ok else f"hook failed (exit {self.exit_code})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "summary": self.summary()}


def expand(argv: Sequence[str], fields: Mapping[str, object]) -> list[str]:
    """Substitute ``{output}``, ``{source}``, ``{experiment}``, ``{step}``, ``{job_id}`` in each argument."""
    values = {key: str(value) for key, value in fields.items()}
    return [arg.format_map(values) for arg in argv]


def hook_environment(fields: Mapping[str, object]) -> dict[str, str]:
    """CKPTD_JOB_OUTPUT, CKPTD_JOB_STEP, ...; the field ``job_id`` becomes CKPTD_JOB_ID."""
    extra = {f"CKPTD_JOB_{key.upper().removeprefix('JOB_')}": str(value) for key, value in fields.items()}
    return {**os.environ, **extra}


def run_hook(argv: Sequence[str], fields: Mapping[str, object], timeout: float) -> HookResult:
    """Run the hook in its own process group; on timeout the whole group is killed."""
    command = expand(argv, fields)
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=hook_environment(fields),
            start_new_session=True,
        )
    except OSError as exc:
        return HookResult(command, None, False, 0.0, f"cannot start {command[0]!r}: {exc.strerror or exc}")
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    tail = output.decode(errors="replace")[-OUTPUT_TAIL_CHARS:]
    exit_code = None if timed_out else process.returncode
    return HookResult(command, exit_code, timed_out, time.monotonic() - started, tail)
