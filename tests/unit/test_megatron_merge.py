"""Pure merge rules, checked against the test factory's independent sharding code."""

from __future__ import annotations

import torch

from ckptd.convert.megatron.merge import extra_state_kind, fit_vocab, merge, piece_shape, split_glu
from ckptd.models.base import Dims
from tests.factories.megatron import _Dims, _fuse_qkv, _shard

DIMS = Dims(layers=1, hidden=6, heads=8, groups=4, head_dim=3, ffn=8, vocab=10, tied=False)
FACTORY_DIMS = _Dims(
    layers=1, hidden=6, heads=8, groups=4, head_dim=3, vocab=10, experts=0, tied=False, moe=False
)


def test_qkv_split_by_query_group_over_tp() -> None:
    q, k, v = torch.randn(24, 6), torch.randn(12, 6), torch.randn(12, 6)
    fused = _fuse_qkv(q, k, v, FACTORY_DIMS)
    for tp in (1, 2, 4):
        pieces = [_shard("col", [fused], tp, r) for r in range(tp)]
        assert piece_shape("qkv", [(24, 6), (12, 6), (12, 6)], tp) == pieces[0].shape
        out = merge("qkv", pieces, DIMS)
        assert all(torch.equal(a, b) for a, b in zip(out, (q, k, v), strict=True))
    bias = merge("qkv", [_fuse_qkv(q[:, 0], k[:, 0], v[:, 0], FACTORY_DIMS)], DIMS)
    assert torch.equal(bias[0], q[:, 0]) and torch.equal(bias[2], v[:, 0])


def test_glu_deinterleave_and_row_concat() -> None:
    gate, up, down = torch.randn(8, 6), torch.randn(8, 6), torch.randn(6, 8)
    for tp in (1, 2, 4):
        gate_out, up_out = split_glu([_shard("glu", [gate, up], tp, r) for r in range(tp)])
        assert torch.equal(gate_out, gate) and torch.equal(up_out, up)
        assert torch.equal(merge("row", [_shard("row", [down], tp, r) for r in range(tp)], DIMS)[0], down)


def test_vocab_trim_and_pad() -> None:
    table = torch.randn(12, 6)
    trimmed = fit_vocab(list(table.chunk(4)), 10)
    assert torch.equal(trimmed, table[:10]) and trimmed.untyped_storage().nbytes() == trimmed.nbytes
    assert torch.equal(fit_vocab([table[:10]], 10), table[:10])
    padded = fit_vocab(list(table[:8].chunk(2)), 10)
    assert padded.shape == (10, 6) and torch.equal(padded[:8], table[:8]) and not padded[8:].any()


def test_extra_state_kinds() -> None:
    assert extra_state_kind(None) == "empty"
    assert extra_state_kind(torch.empty(0, dtype=torch.uint8)) == "empty"
    for protocol in (2, 4, 5):
        assert (
            extra_state_kind(torch.tensor([0x80, protocol, ord("N"), ord(".")], dtype=torch.uint8)) == "empty"
        )
    assert extra_state_kind(torch.arange(40, dtype=torch.uint8)) == "fp8"
    assert extra_state_kind("bytes") == "other"
