"""Tiny stand-ins for what the trainers write, in the trainers' order (formats.md §1.3).

For tests, benchmarks and demos of detection only: the shard files hold placeholder bytes, not
loadable tensors. ``full_weights.pt`` is a real ``torch.save`` zip so the zip check sees the real thing.
"""

from __future__ import annotations

from pathlib import Path

from ckptd.detect import names


def write_full_weights(path: Path, *, numel: int = 16) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model.embed_tokens.weight": torch.zeros(numel)}, path)
    return path


def write_fsdp_step(
    step_dir: Path,
    *,
    ranks: int = 2,
    metadata: bool = True,
    full_weights: bool = True,
    data_pt: bool = False,
    old_layout: bool = False,
) -> Path:
    """Shards first, then ``.metadata`` via ``.metadata.tmp`` + rename, then ``full_weights.pt``."""
    actor = step_dir / "actor"
    dcp = actor if old_layout else actor / names.DCP_DIR
    dcp.mkdir(parents=True, exist_ok=True)
    for rank in range(ranks):
        (dcp / f"__{rank}_0.distcp").write_bytes(b"\0" * 64)
    if metadata:
        tmp = dcp / names.DCP_METADATA_TMP
        tmp.write_bytes(b"metadata")
        tmp.replace(dcp / names.DCP_METADATA)
    if full_weights:
        write_full_weights(actor / names.FULL_WEIGHTS_DIR / names.FULL_WEIGHTS_NAMES[0])
    if data_pt:
        (step_dir / "data").mkdir(exist_ok=True)
        (step_dir / "data" / names.DATA_PT).write_bytes(b"data")
    return step_dir


def write_megatron_step(
    step_dir: Path,
    *,
    iteration: int | None = None,
    ranks: tuple[str, ...] = ("mp_rank_00", "mp_rank_01"),
    tracker: str | None = "",
) -> Path:
    """``iter_<N:07d>/<mp>/`` files first, the tracker last; ``tracker=""`` writes the iteration
    (no newline), ``None`` writes no tracker, anything else is written verbatim."""
    step = names.parse_step_dir_name(step_dir.name)
    it = iteration if iteration is not None else (step or 0)
    actor = step_dir / "actor"
    iter_dir = actor / names.iter_dir_name(it)
    iter_dir.mkdir(parents=True, exist_ok=True)
    for rank in ranks:
        (iter_dir / rank).mkdir(exist_ok=True)
        (iter_dir / rank / "distrib_optim.pt").write_bytes(b"\0" * 32)
        (iter_dir / rank / "model_optim_rng.pt").write_bytes(b"\0" * 32)
    if tracker is not None:
        (actor / names.TRACKER_NAME).write_text(tracker or str(it))
    return step_dir
