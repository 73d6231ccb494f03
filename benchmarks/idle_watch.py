"""Idle cost of watching: Scanner.scan() every --interval seconds plus the observer idling.

Builds --experiments experiment folders (<root>/group_<k>/exp_<i>/checkpoints/global_step_1..N, every
step complete: FSDP DCP + a real tiny full_weights.pt, or Megatron legacy, alternating), then measures
process CPU time (all threads) of: the first scan (cold, nothing known), the scan that finds the last
steps settled, steady-state scans, and the observer idling with no scans, in `auto` and `poll` mode.
CPU% at the interval = (CPU of one steady scan + idle CPU over one interval) / interval.

    .venv/bin/python benchmarks/idle_watch.py [--experiments 1000] [--interval 30]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from ckptd.detect.layouts import write_fsdp_step, write_full_weights, write_megatron_step
from ckptd.watch import Scanner, WakeupObserver


@dataclass
class Cost:
    wall: float
    cpu: float


def measure(fn: object, repeat: int = 1) -> Cost:
    assert callable(fn)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return Cost((time.perf_counter() - w0) / repeat, (time.process_time() - c0) / repeat)


def build_tree(root: Path, experiments: int, steps: int) -> None:
    template = write_full_weights(root / ".template" / "full_weights.pt").read_bytes()
    for i in range(experiments):
        ckpts = root / f"group_{i // 100:02d}" / f"exp_{i:04d}" / "checkpoints"
        for n in range(1, steps + 1):
            step = ckpts / f"global_step_{n}"
            if i % 2:
                write_megatron_step(step)
                continue
            write_fsdp_step(step, full_weights=False)
            fw = step / "actor" / "model_state_dict" / "full_weights.pt"
            fw.parent.mkdir(parents=True, exist_ok=True)
            fw.write_bytes(template)
    shutil.rmtree(root / ".template")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bench_mode(root: Path, mode: str, interval: float, scans: int, idle: float) -> dict[str, float]:
    clock = Clock()
    scanner = Scanner([root], max_depth=4, settle_seconds=interval, clock=clock)
    observer = WakeupObserver([root], mode=mode)  # type: ignore[arg-type]
    start = measure(observer.start)
    first = measure(scanner.scan)
    clock.now += interval
    settle = measure(scanner.scan)
    result = scanner.scan()
    steady = measure(scanner.scan, repeat=scans)
    observer.clear()
    idle_cost = measure(lambda: observer.wait(idle))
    observer.stop()
    idle_rate = idle_cost.cpu / idle_cost.wall
    return {
        "observer_mode": 1.0 if observer.mode == "events" else 0.0,
        "observer_start_s": start.wall,
        "first_scan_s": first.wall,
        "first_scan_cpu_s": first.cpu,
        "settle_scan_s": settle.wall,
        "steady_scan_s": steady.wall,
        "steady_scan_cpu_s": steady.cpu,
        "idle_cpu_pct": 100 * idle_rate,
        "complete": float(len(result.complete)),
        "cpu_pct_at_interval": 100 * (steady.cpu + idle_rate * interval) / interval,
        "cold_cpu_pct_at_interval": 100 * (first.cpu + idle_rate * interval) / interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--scans", type=int, default=10, help="steady-state scans to average")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of observer idling measured")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp tree")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    base = Path(tempfile.mkdtemp(prefix="ckptd-idle-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        build_tree(base / "runs", args.experiments, args.steps)
        print(f"built {args.experiments} experiments x {args.steps} steps in {time.perf_counter() - t0:.1f}s")
        for mode in ("auto", "poll"):
            report(mode, bench_mode(base / "runs", mode, args.interval, args.scans, args.idle), args.interval)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(mode: str, r: dict[str, float], interval: float) -> None:
    observed = "inotify" if r["observer_mode"] else "none (poll)"
    start = r["observer_start_s"]
    print(f"\nmode={mode}: observer={observed}, start {start:.3f}s, complete={r['complete']:.0f}")
    print(f"  first scan (nothing known)  {r['first_scan_s']:.3f}s wall, {r['first_scan_cpu_s']:.3f}s CPU")
    print(f"  settle scan (lists again)   {r['settle_scan_s']:.3f}s wall")
    print(f"  steady scan                 {r['steady_scan_s']:.3f}s wall, {r['steady_scan_cpu_s']:.3f}s CPU")
    print(f"  observer idle               {r['idle_cpu_pct']:.3f}% CPU")
    print(f"  CPU at {interval:g}s interval      {r['cpu_pct_at_interval']:.3f}% (target <= 1%)")
    print(f"  same, if every scan were cold {r['cold_cpu_pct_at_interval']:.3f}%")


if __name__ == "__main__":
    main()
