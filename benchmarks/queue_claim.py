"""Queue throughput: claim + publish_and_finish cycles per second on a SQLite file (target >= 500/s).

Each run gets a fresh WAL database in a temp dir (pass --dir to put it on the disk you care about),
enqueues --jobs jobs, then 1 and --processes claimer processes drain it. Spawn/import time is excluded:
the clock starts when every claimer is ready. Besides the wall-clock rate it prints the CPU time one
cycle costs the claimers, which stays meaningful on a shared, loaded machine; the load average is shown.
Usage: python benchmarks/queue_claim.py [--jobs 3000] [--processes 4] [--dir DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ckptd.queue.engine import make_engine, upgrade
from ckptd.queue.repository import JobRepository

SPAWN = multiprocessing.get_context("spawn")


def _drain(url: str, name: str, ready: Any, start: Any, results: Any) -> None:
    repo = JobRepository(make_engine(url))
    repo.counts()  # open the connection before the clock starts
    ready.wait()
    start.wait()
    cpu_began, done = time.process_time(), 0
    while (claim := repo.claim(name, 60.0)) is not None:
        repo.publish_and_finish(claim.job.id, claim.token, lambda: None, {"by": name})
        done += 1
    results.put((done, time.monotonic(), time.process_time() - cpu_began))


def _fill(url: str, jobs: int) -> float:
    repo = JobRepository(make_engine(url))
    upgrade(repo.engine)
    began = time.monotonic()
    for step in range(jobs):
        repo.enqueue(
            source=f"/runs/bench/checkpoints/global_step_{step}",
            output=f"/hf/bench/global_step_{step}",
            experiment="bench",
            step=step,
            format="fsdp_dcp",
            watch_root="/runs",
            options={"dtype": "bf16"},
            max_attempts=3,
        )
    return jobs / (time.monotonic() - began)


def run(directory: Path, jobs: int, processes: int) -> dict[str, float]:
    """Enqueue rate, wall-clock cycle rate and CPU ms per cycle with ``processes`` concurrent claimers."""
    url = f"sqlite:///{directory / f'bench-{processes}.db'}"
    enqueue_rate = _fill(url, jobs)
    ready, start, results = SPAWN.Barrier(processes + 1), SPAWN.Event(), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_drain, args=(url, f"w{n}", ready, start, results)) for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    began = time.monotonic()
    start.set()
    reports = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    finished = sum(done for done, _, _ in reports)
    if finished != jobs:
        raise SystemExit(f"only {finished} of {jobs} jobs finished")
    wall = max(end for _, end, _ in reports) - began
    cpu = sum(cpu for _, _, cpu in reports)
    return {"enqueue_per_s": enqueue_rate, "cycles_per_s": jobs / wall, "cpu_ms_per_cycle": 1000 * cpu / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the database files go (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"queue_claim: {args.jobs} jobs per run, SQLite WAL file in {tmp}, {os.cpu_count()} CPUs")
        print(f"  load average before: {os.getloadavg()[0]:.2f}")
        for processes in sorted({1, args.processes}):
            figures = run(Path(tmp), args.jobs, processes)
            print(
                f"  {processes} claimer process(es): {figures['cycles_per_s']:6.0f} claim+finish/s wall,"
                f" {figures['cpu_ms_per_cycle']:.2f} ms CPU per cycle,"
                f" enqueue {figures['enqueue_per_s']:.0f}/s"
            )
        print(f"  load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
