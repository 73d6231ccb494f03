"""FSDP checkpoints written the way RLinf's FSDP2 trainer writes them (formats.md §1.2, §1.3, §2).

Real gloo process groups, ``fully_shard`` per decoder layer and the root, one Adam step (lr=0, so the
weights stay bit-exact), then ``dcp.save({"fsdp_checkpoint": Checkpoint})`` and, after a barrier,
rank 0's ``model_state_dict/full_weights.pt``. The main process builds every model first and keeps it,
so tests compare against the exact source tensors.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.factories.tiny_hf import build_model, sample_input_ids, save_base_model


@dataclass(frozen=True)
class LoraSpec:
    r: int = 4
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    use_rslora: bool = False


@dataclass(frozen=True)
class CkptSpec:
    """One experiment: ``<root>/<name>/checkpoints/global_step_<step>/actor/...``."""

    name: str
    kind: str
    step: int = 5
    seed: int = 0
    lora: LoraSpec | None = None
    old_layout: bool = False  # DCP files directly in actor/, huggingface_model/ beside them
    full_weights: bool = True
    dcp: bool = True
    # Trainer config.yaml under <experiment>/tensorboard/ naming the base model (formats.md §1.1).
    trainer_config: bool = True
    extra_model_cfg: dict[str, Any] = field(default_factory=dict)


@dataclass
class WrittenCkpt:
    spec: CkptSpec
    step_dir: Path
    base_dir: Path
    model: Any  # the source model (PEFT-wrapped when spec.lora), fp32, eval mode

    @property
    def actor(self) -> Path:
        return self.step_dir / "actor"

    @property
    def dcp_dir(self) -> Path:
        return self.actor if self.spec.old_layout else self.actor / "dcp_checkpoint"

    @property
    def full_weights(self) -> Path:
        return self.actor / "model_state_dict" / "full_weights.pt"

    @property
    def lora_config(self) -> Path:
        """The adapter_config.json dir of the run's initial adapter (LoRA specs only)."""
        return self.base_dir.parent.parent / "lora_init" / self.spec.name


class _Checkpoint:
    """RLinf's Stateful wrapper: model, optimizers, lr_schedulers, fsdp_version, rng."""

    def __init__(self, model: Any, optimizer: Any, scheduler: Any) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {
            "model": model_sd,
            "optimizers": optim_sd,
            "lr_schedulers": [self.scheduler.state_dict()],
            "fsdp_version": "fsdp2",
            "rng": {
                "cpu": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "random": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


def build_source(spec: CkptSpec) -> Any:
    """The model a run trains (fp32), PEFT-wrapped with non-zero LoRA B when ``spec.lora``."""
    model = build_model(spec.kind, seed=spec.seed, **spec.extra_model_cfg)
    if spec.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        target_modules=list(spec.lora.targets),
        lora_dropout=0.0,
        use_rslora=spec.lora.use_rslora,
        init_lora_weights=False,  # random A and B: the merge must visibly change the weights
    )
    torch.manual_seed(spec.seed + 7)
    peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def _train_step_lr0(model: Any, vocab_size: int) -> Any:
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.0, weight_decay=0.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    ids = sample_input_ids(vocab_size, length=8, seed=dist.get_rank())
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return optimizer, scheduler


def _save_one(rank: int, spec: CkptSpec, step_dir: Path, state_file: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    model = build_source(spec)
    model.load_state_dict(torch.load(state_file, weights_only=True))
    inner = model.get_base_model() if spec.lora else model
    for layer in inner.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer, scheduler = _train_step_lr0(model, inner.config.vocab_size)
    actor = step_dir / "actor"
    dcp_dir = actor if spec.old_layout else actor / "dcp_checkpoint"
    dist.barrier()
    if spec.dcp:
        dcp.save({"fsdp_checkpoint": _Checkpoint(model, optimizer, scheduler)}, checkpoint_id=str(dcp_dir))
    dist.barrier()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0 and spec.full_weights:
        (actor / "model_state_dict").mkdir(parents=True, exist_ok=True)
        torch.save(full, actor / "model_state_dict" / "full_weights.pt")
    dist.barrier()


def _worker(rank: int, world: int, init_file: str, jobs: list[tuple[CkptSpec, str, str]]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for spec, step_dir, state_file in jobs:
            _save_one(rank, spec, Path(step_dir), Path(state_file))
    finally:
        dist.destroy_process_group()


def _trainer_config(spec: CkptSpec, base_dir: Path, lora_dir: Path) -> str:
    lines = [
        "runner:",
        f"  experiment_name: {spec.name}",
        "actor:",
        "  training_backend: fsdp",
        "  model:",
        f"    model_path: {base_dir}",
    ]
    if spec.lora:
        lines += ["    is_lora: true", f"    lora_rank: {spec.lora.r}", f"    lora_path: {lora_dir}"]
    return "\n".join(lines) + "\n"


def _prepare(root: Path, spec: CkptSpec) -> tuple[WrittenCkpt, Path]:
    experiment = root / spec.name
    step_dir = experiment / "checkpoints" / f"global_step_{spec.step}"
    (step_dir / "actor").mkdir(parents=True)
    model = build_source(spec)
    base_model = model.get_base_model() if spec.lora else model
    base_dir = save_base_model(_pristine_base(spec), root / "base" / spec.name)
    if spec.old_layout:
        save_base_model(_pristine_base(spec), step_dir / "actor" / "huggingface_model")
    lora_dir = root / "lora_init" / spec.name
    if spec.lora:
        # The adapter the run started from (RLinf actor.model.lora_path): its config holds alpha.
        model.peft_config["default"].save_pretrained(str(lora_dir))
    if spec.trainer_config:
        tb = experiment / "tensorboard" / "run0"
        tb.mkdir(parents=True)
        (tb / "config.yaml").write_text(_trainer_config(spec, base_dir, lora_dir))
    state_file = root / "states" / f"{spec.name}.pt"
    state_file.parent.mkdir(exist_ok=True)
    torch.save(model.state_dict(), state_file)
    del base_model
    return WrittenCkpt(spec, step_dir, base_dir, model), state_file


def _pristine_base(spec: CkptSpec) -> Any:
    """The base model dir a LoRA run started from (its weights are the un-adapted ones)."""
    return build_model(spec.kind, seed=spec.seed, **spec.extra_model_cfg)


def write_checkpoints(root: Path, specs: list[CkptSpec], world_size: int) -> dict[str, WrittenCkpt]:
    """Write every spec's checkpoint from one group of ``world_size`` gloo processes."""
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, WrittenCkpt] = {}
    jobs: list[tuple[CkptSpec, str, str]] = []
    for spec in specs:
        ckpt, state_file = _prepare(root, spec)
        written[spec.name] = ckpt
        jobs.append((spec, str(ckpt.step_dir), str(state_file)))
    init_file = root / f".gloo-init-{os.getpid()}-{world_size}"
    init_file.unlink(missing_ok=True)
    mp.start_processes(
        _worker,
        args=(world_size, str(init_file), jobs),
        nprocs=world_size,
        join=True,
        start_method=START_METHOD,
    )
    return written


START_METHOD = os.environ.get("CKPTD_TEST_START_METHOD", "fork")

STANDARD_SPECS_2 = [
    CkptSpec("qwen2", "qwen2"),
    CkptSpec("qwen2_tied", "qwen2_tied", step=7),
    CkptSpec("llama", "llama", step=3),
    CkptSpec("llama_old", "llama", step=2, old_layout=True, full_weights=False, trainer_config=False),
    CkptSpec("qwen2_lora", "qwen2", step=9, lora=LoraSpec()),
    CkptSpec("qwen3_tied_rslora", "qwen3_tied", step=4, lora=LoraSpec(r=2, alpha=6, use_rslora=True)),
]
# 3 ranks give uneven dim-0 chunks (ceil division, formats.md §2.7).
STANDARD_SPECS_3 = [
    CkptSpec("qwen3", "qwen3", step=11),
    CkptSpec("qwen2_tied_w3", "qwen2_tied", step=12, seed=3),
]


@functools.cache
def standard_checkpoints() -> dict[str, WrittenCkpt]:
    """Every checkpoint the FSDP tests use, written once per test process (two process groups)."""
    root = Path(tempfile.mkdtemp(prefix="ckptd-fsdp-"))
    import atexit

    atexit.register(shutil.rmtree, root, True)
    written = write_checkpoints(root / "w2", STANDARD_SPECS_2, world_size=2)
    written.update(write_checkpoints(root / "w3", STANDARD_SPECS_3, world_size=3))
    return written


def describe(ckpt: WrittenCkpt) -> str:
    return json.dumps({"name": ckpt.spec.name, "step_dir": str(ckpt.step_dir)})
