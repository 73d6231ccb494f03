"""Marker written -> job queued, with the real daemon (`ckptd run`, events mode, no workers).

Each round writes an FSDP step in the trainer's order (DCP shards, then the atomic `.metadata`
rename) and measures until the job row exists. The scan interval stays at its 30 s default, so
anything well under that is the inotify wake-up path.

    .venv/bin/python benchmarks/detect_latency.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ckptd.demo_model import build_base_model, trained_state, write_fsdp_step

REPO = Path(__file__).resolve().parents[1]


def job_count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return int(connection.execute("select count(*) from jobs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ckptd-latency-"))
    model = build_base_model(root / "base")
    staged = root / "staged"
    write_fsdp_step(staged, trained_state(model, 1), adam=False, full_weights=False)
    (root / "runs").mkdir()
    db = root / "ckptd.db"
    config = root / "ckptd.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n[scan]\nmode = "events"\n[workers]\ncount = 0\n'
        f'[log]\nformat = "json"\n[[watch]]\nroot = "{root / "runs"}"\noutput = "{root / "hf"}"\n'
    )
    log = (root / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ckptd", "run", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while "daemon.started" not in (root / "daemon.log").read_text():
            time.sleep(0.1)
        time.sleep(1.0)
        latencies = [measure_round(root, staged, db, i) for i in range(args.rounds)]
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    latencies.sort()
    print(f"marker -> queued over {len(latencies)} rounds (events mode, scan interval 30 s):")
    print(
        f"  median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p90 {latencies[int(0.9 * (len(latencies) - 1))] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


def measure_round(root: Path, staged: Path, db: Path, index: int) -> float:
    before = job_count(db)
    dcp = root / "runs" / f"exp{index}" / "checkpoints" / "global_step_1" / "actor" / "dcp_checkpoint"
    dcp.mkdir(parents=True)
    for shard in (staged / "actor" / "dcp_checkpoint").glob("*.distcp"):
        shutil.copy(shard, dcp / shard.name)
    time.sleep(0.5)
    shutil.copy(staged / "actor" / "dcp_checkpoint" / ".metadata", dcp / ".metadata.tmp")
    start = time.monotonic()
    (dcp / ".metadata.tmp").replace(dcp / ".metadata")
    while job_count(db) == before:
        if time.monotonic() - start > 60:
            raise SystemExit("no job after 60 s")
        time.sleep(0.005)
    return time.monotonic() - start


if __name__ == "__main__":
    main()
