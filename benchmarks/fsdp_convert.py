"""FSDP -> HF conversion against the I/O floor and the naive path, on a ~2 GB bf16 Qwen2-style model.

The checkpoint is written like RLinf's FSDP2 trainer writes it: 2 gloo ranks, DTensor dim-0 shards,
``dcp.save({"fsdp_checkpoint": {"model", "optimizers" (full Adam state), "lr_schedulers", ...}})``,
then rank 0's ``model_state_dict/full_weights.pt``. Params and Adam state are bf16 (pure-bf16
training), so the DCP holds 3x the model's bytes. The page cache is dropped before every timed step.

Rows (each under ``/usr/bin/time -v``): the I/O floor (``cat`` the model bytes once + ``cp`` them to
the output with fsync), ``ckptd convert`` from the DCP and from ``full_weights.pt`` (default 5 GB
shards and 500 MB shards), and the naive paths (``torch.load`` everything + ``save_file``; for DCP
first ``dcp_to_torch_save``, as the reference tool does). Then the DCP row again with twice the layers.

    .venv/bin/python benchmarks/fsdp_convert.py [--layers 20] [--scratch /tmp/ckptd-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import MODEL_CONFIG, evict, timed  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CONFIG = MODEL_CONFIG
_FULL: dict[str, torch.Tensor] = {}  # inherited by the forked ranks


def expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _rank(rank: int, world: int, init_file: str, dcp_dir: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))

    def shard(full: torch.Tensor, local: torch.Tensor) -> DTensor:
        return DTensor.from_local(
            local, mesh, [Shard(0)], run_check=False, shape=full.shape, stride=full.stride()
        )

    model, state = {}, {}
    for name, full in _FULL.items():
        local = full.chunk(world)[rank]
        model[name] = shard(full, local)
        state[name] = {
            "exp_avg": shard(full, torch.empty_like(local).normal_()),
            "exp_avg_sq": shard(full, torch.empty_like(local).uniform_()),
            "step": torch.tensor(100.0),
        }
    checkpoint = {
        "model": model,
        "optimizers": {"state": state, "param_groups": [{"lr": 1e-6, "params": list(_FULL)}]},
        "lr_schedulers": [{"last_epoch": 100}],
        "fsdp_version": "fsdp2",
        "rng": {"cpu": torch.get_rng_state()},
    }
    dcp.save({"fsdp_checkpoint": checkpoint}, checkpoint_id=dcp_dir)
    dist.barrier()
    dist.destroy_process_group()


def make_checkpoint(root: Path, layers: int) -> tuple[Path, Path]:
    import torch.multiprocessing as mp

    config = {**CONFIG, "num_hidden_layers": layers}
    base = root / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(0)
    _FULL.clear()
    for name, shape in expected_shapes(config).items():
        _FULL[name] = torch.empty(shape, dtype=torch.bfloat16).normal_(generator=generator)
    step = root / "run" / "checkpoints" / "global_step_100"
    actor = step / "actor"
    (actor / "model_state_dict").mkdir(parents=True)
    init = root / ".gloo-init"
    mp.start_processes(
        _rank, args=(2, str(init), str(actor / "dcp_checkpoint")), nprocs=2, start_method="fork"
    )
    torch.save(_FULL, actor / "model_state_dict" / "full_weights.pt")
    _FULL.clear()
    return base, step


def drop_caches(paths: list[Path]) -> None:
    """Evict the checkpoint files (only) from the page cache: cold reads, warm interpreter (a daemon's
    workers have their imports loaded; a global drop_caches would time the venv's disk reads too)."""
    evict(paths)


NAIVE_PT = """
import sys, torch
from safetensors.torch import save_file
state = torch.load(sys.argv[1], weights_only=True)
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[2], metadata={"format": "pt"})
"""
NAIVE_DCP = """
import sys, torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from safetensors.torch import save_file
dcp_to_torch_save(sys.argv[1], sys.argv[2])
state = torch.load(sys.argv[2], weights_only=True)["fsdp_checkpoint"]["model"]
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[3], metadata={"format": "pt"})
"""


def _convert(step_or_file: Path, out: Path, base: Path, shard: str) -> str:
    return (
        f"{PYTHON} -m ckptd convert {step_or_file} --out {out} --base-model {base} --dtype keep "
        f"--max-shard-size {shard}"
    )


class _Runner:
    """Times commands with the checkpoint's pages evicted first; keeps the table rows."""

    def __init__(self, inputs: list[Path], out: Path) -> None:
        self.inputs, self.out = inputs, out
        self.rows: list[tuple[str, float, int]] = []

    def run(self, label: str, command: str, cleanup: list[Path]) -> None:
        drop_caches(self.inputs)
        label = f"{label} [load {os.getloadavg()[0]:.1f}]"  # other work on the host skews wall times
        wall, rss = timed(command)
        if (self.out / "ckptd.json").is_file():
            manifest = json.loads((self.out / "ckptd.json").read_text())
            in_process = sum(manifest["timings_s"].values())
            stream = manifest["extra"]["stream_seconds"]
            label = f"{label}; in-process {in_process:.2f}s, of which read+write+hash {stream:.2f}s"
        self.rows.append((label, wall, rss))
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        print(f"    {label}: {wall:.1f}s {rss} MiB", file=sys.stderr, flush=True)


def _commands(root: Path, step: Path, base: Path, full: bool) -> list[tuple[str, str, list[Path]]]:
    actor = step / "actor"
    pt = actor / "model_state_dict" / "full_weights.pt"
    out, floor, naive, tmp_pt = root / "out", root / "floor.bin", root / "naive.st", root / "dcp.pt"
    floor_cmd = f"cat {pt} > /dev/null && dd if={pt} of={floor} bs=16M conv=fsync status=none"
    rows = [
        (
            f"I/O floor: cat model bytes + cp with fsync ({pt.stat().st_size / 1e9:.2f} GB)",
            floor_cmd,
            [floor],
        ),
        ("ckptd convert from DCP (5GB shards)", _convert(step, out, base, "5GB"), [out]),
        ("ckptd convert from DCP (500MB shards)", _convert(step, out, base, "500MB"), [out]),
    ]
    if not full:
        return rows
    return [
        *rows,
        ("ckptd convert from full_weights.pt (5GB shards)", _convert(pt, out, base, "5GB"), [out]),
        ("ckptd convert from full_weights.pt (500MB shards)", _convert(pt, out, base, "500MB"), [out]),
        ("naive: torch.load(full_weights.pt) + save_file", f"{PYTHON} -c '{NAIVE_PT}' {pt} {naive}", [naive]),
        (
            "naive: dcp_to_torch_save + torch.load + save_file",
            f"{PYTHON} -c '{NAIVE_DCP}' {actor / 'dcp_checkpoint'} {tmp_pt} {naive}",
            [naive, tmp_pt],
        ),
    ]


def measure(root: Path, layers: int, full: bool) -> list[tuple[str, float, int]]:
    started = time.monotonic()
    base, step = make_checkpoint(root, layers)
    actor = step / "actor"
    pt = actor / "model_state_dict" / "full_weights.pt"
    dcp_files = sorted((actor / "dcp_checkpoint").iterdir())
    dcp_gb = sum(p.stat().st_size for p in dcp_files) / 1e9
    print(
        f"  {layers} layers: model {pt.stat().st_size / 1e9:.2f} GB, DCP {dcp_gb:.2f} GB, written in "
        f"{time.monotonic() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    runner = _Runner([pt, *dcp_files], root / "out")
    startup = f"{PYTHON} -c 'import torch, transformers, ckptd.convert.pipeline, ckptd.cli'"
    runner.rows.append(("interpreter start-up (imports, warm)", *timed(startup)))
    for label, command, cleanup in _commands(root, step, base, full):
        runner.run(label, command, cleanup)
    shutil.rmtree(root)
    return runner.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ckptd-bench"))
    options = parser.parse_args()
    shutil.rmtree(options.scratch, ignore_errors=True)
    os.chdir(REPO)
    print("| model | step | wall s | peak RSS MiB |\n|---|---|---:|---:|", flush=True)
    try:
        for layers, full in ((options.layers, True), (2 * options.layers, False)):
            for name, wall, rss in measure(options.scratch / f"L{layers}", layers, full):
                print(f"| Qwen2-style {layers} layers, 2 ranks | {name} | {wall:.2f} | {rss} |", flush=True)
    finally:
        shutil.rmtree(options.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
