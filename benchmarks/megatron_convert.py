"""Megatron → HF conversion against the I/O floor, on a ~2 GB bf16 Qwen2-style model at TP2/PP2.

For each model size: write the checkpoint, then (page cache dropped before each) time
``cat`` of the rank files, ``cp -r`` of the actor folder, and ``ckptd convert``; all under
``/usr/bin/time -v`` for wall time and peak RSS. Then the same model with twice the layers.

    .venv/bin/python benchmarks/megatron_convert.py [--layers 20] [--scratch /tmp/ckptd-bench-mg]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import MODEL_CONFIG, evict, timed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from ckptd.models import architecture_for, dims_from_config, expected_shapes  # noqa: E402
from tests.factories.megatron import MegatronLayout, save_megatron  # noqa: E402

CONFIG = MODEL_CONFIG


def make_checkpoint(root: Path, layers: int) -> tuple[Path, Path]:
    config = {**CONFIG, "num_hidden_layers": layers}
    base = root / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps(config, indent=2))
    shapes = expected_shapes(architecture_for("qwen2"), dims_from_config(config))
    generator = torch.Generator().manual_seed(0)
    hf = {k: torch.empty(s, dtype=torch.bfloat16).normal_(generator=generator) for k, s in shapes.items()}
    step = root / "run" / "checkpoints" / "global_step_100"
    save_megatron(base, step, MegatronLayout(tp=2, pp=2, step=100), hf=hf)
    return base, step


def drop_caches(paths: list[Path]) -> None:
    """Evict the inputs from the page cache (root: drop_caches; else fadvise DONTNEED per file)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    except OSError:
        evict(paths)


def best(command: str, repeat: int, inputs: list[Path], before: str = "") -> tuple[float, int]:
    """Fastest of ``repeat`` cold runs (page cache dropped before each; ``before`` runs untimed)."""
    runs = []
    for _ in range(repeat):
        if before:
            subprocess.run(["bash", "-c", before], check=True)
        drop_caches(inputs)
        runs.append(timed(command))
    return min(runs)


def measure(root: Path, layers: int, repeat: int) -> list[tuple[str, float, int]]:
    base, step = make_checkpoint(root, layers)
    inputs = sorted(step.rglob("*.pt"))
    size = sum(p.stat().st_size for p in inputs) / 1e9
    ckptd = REPO / ".venv" / "bin" / "ckptd"
    copy, out = root / "copy", root / "out"
    cat = f"cat {' '.join(map(str, inputs))} > /dev/null"
    convert = f"{ckptd} convert {step} --out {out} --base-model {base} --dtype keep"
    # Everything `ckptd convert` imports before it reads a byte: torch, both converters, transformers.
    startup = (
        f"{sys.executable} -c 'import ckptd.cli, ckptd.convert.pipeline as p, ckptd.convert.registry as r; "
        "r.converters(); from transformers import AutoConfig, GenerationConfig'"
    )
    rows = [
        (f"cat rank files ({size:.2f} GB, cold)", *best(cat, repeat, inputs)),
        ("cp -r actor/ (cold)", *best(f"cp -r {step / 'actor'} {copy}", repeat, inputs, f"rm -rf {copy}")),
        ("interpreter start-up (imports, cold)", *best(startup, repeat, inputs)),
        ("ckptd convert (cold)", *best(convert, repeat, inputs, f"rm -rf {out}")),
    ]
    manifest = json.loads((out / "ckptd.json").read_text())
    written = manifest["tensor_bytes"] / 1e9
    print(f"  {layers} layers: {len(manifest['shards'])} shards, {written:.2f} GB written", flush=True)
    shutil.rmtree(root)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ckptd-bench-mg"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per step; the fastest is shown")
    options = parser.parse_args()
    print(f"cpus={os.cpu_count()} load average before: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(options.scratch, ignore_errors=True)
    print("| model | step | wall s | peak RSS MiB |\n|---|---|---:|---:|")
    for layers in (options.layers, 2 * options.layers):
        for name, wall, rss in measure(options.scratch / f"L{layers}", layers, options.repeat):
            print(f"| Qwen2-style {layers} layers TP2/PP2 | {name} | {wall:.2f} | {rss} |", flush=True)
    shutil.rmtree(options.scratch, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
