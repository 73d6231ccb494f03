"""Pure merge rules for Megatron tensor/expert-parallel pieces (formats.md §4). No I/O."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ckptd.errors import ConversionError
from ckptd.models.base import Dims, Merge

# Pickled None as TE stores it: PROTO <p>, NONE, STOP (formats.md §3.4).
_PICKLED_NONE_TAIL = b"N."


def split_qkv(fused: torch.Tensor, dims: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a merged fused QKV ([ng, nh/ng+2, hd] row blocks) into q, k, v (weights or biases)."""
    per_group = dims.heads // dims.groups
    rest = tuple(fused.shape[1:])
    blocks = fused.reshape(dims.groups, per_group + 2, dims.head_dim, *rest)
    q, k, v = torch.split(blocks, [per_group, 1, 1], dim=1)
    return (
        q.reshape(dims.q_rows, *rest),
        k.reshape(dims.kv_rows, *rest),
        v.reshape(dims.kv_rows, *rest),
    )


def split_glu(pieces: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each TP shard is ``[gate_r; up_r]``: regroup to ``[gate_0..gate_n]`` and ``[up_0..up_n]``."""
    gates, ups = [], []
    for piece in pieces:
        half = piece.shape[0] // 2
        gates.append(piece[:half])
        ups.append(piece[half:])
    return torch.cat(gates, dim=0), torch.cat(ups, dim=0)


def fit_vocab(pieces: Sequence[torch.Tensor], vocab: int) -> torch.Tensor:
    """Concat vocab-parallel pieces keeping rows ``[0, vocab)``; zero rows appended when the checkpoint
    holds fewer (formats.md §4.3). Padding rows are never copied, so the result owns exact storage."""
    kept: list[torch.Tensor] = []
    rows = 0
    for piece in pieces:
        take = min(piece.shape[0], vocab - rows)
        if take > 0:
            kept.append(piece[:take])
            rows += take
    if rows < vocab:
        kept.append(torch.zeros((vocab - rows, *pieces[0].shape[1:]), dtype=pieces[0].dtype))
    return kept[0] if len(kept) == 1 and kept[0].shape[0] == pieces[0].shape[0] else torch.cat(kept, dim=0)


def merge(kind: Merge, pieces: Sequence[torch.Tensor], dims: Dims) -> tuple[torch.Tensor, ...]:
    """Merge the parallel pieces of one Megatron tensor into its HF tensor(s)."""
    if kind == "rep":
        return (pieces[0],)
    if kind == "row":
        return (_cat(pieces, 1),)
    if kind == "col":
        return (_cat(pieces, 0),)
    if kind == "vocab":
        return (fit_vocab(pieces, dims.vocab),)
    if kind == "qkv":
        return split_qkv(_cat(pieces, 0), dims)
    if kind == "glu":
        return split_glu(pieces)
    raise ConversionError(f"unknown merge rule {kind!r}")


def _cat(pieces: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(list(pieces), dim=dim)


def piece_shape(kind: Merge, hf_shapes: Sequence[tuple[int, ...]], parts: int) -> tuple[int, ...] | None:
    """The shape each of ``parts`` pieces must have on disk; None when it cannot be known (vocab)."""
    first = hf_shapes[0]
    if kind == "rep":
        return first
    if kind == "row":
        return (first[0], first[1] // parts)
    if kind == "col":
        return (first[0] // parts, *first[1:])
    if kind in ("qkv", "glu"):
        rows = sum(shape[0] for shape in hf_shapes)
        return (rows // parts, *first[1:])
    return None


def extra_state_kind(value: object) -> str:
    """``empty`` for None, an empty tensor or a pickled None; ``fp8`` for real TE state; else ``other``."""
    if value is None:
        return "empty"
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1:
        if value.numel() == 0:
            return "empty"
        data = bytes(value[:8].tolist())
        if value.numel() <= 4 and data.endswith(_PICKLED_NONE_TAIL):
            return "empty"
        return "fp8"
    return "other"
