"""Pure layout inference: folder names, writer ranks, completeness, stage order."""

from __future__ import annotations

import pytest

from ckptd.convert.megatron.layout import (
    Sizes,
    build_layout,
    check_complete,
    chunk_order,
    count_layers,
    expected_files,
    parse_folder,
    sizes_from,
)
from ckptd.errors import ConversionError


def _layer_keys(count: int, pre: bool = False, post: bool = False) -> list[str]:
    keys = [f"decoder.layers.{i}.self_attention.linear_qkv.weight" for i in range(count)]
    keys += ["embedding.word_embeddings.weight"] if pre else []
    return keys + (["decoder.final_layernorm.weight"] if post else [])


def test_parse_folder() -> None:
    assert parse_folder("mp_rank_03") == (3,)
    assert parse_folder("mp_rank_01_002_004") == (1, 2, 4)
    with pytest.raises(ConversionError, match="not a Megatron rank folder"):
        parse_folder("mp_rank_1")


def test_expert_parallel_writers_follow_megatron_rank_order() -> None:
    files = expected_files(Sizes(tp=4, pp=1, ep=8, etp=1, experts=16))
    assert sorted(files.values())[:3] == ["mp_rank_00_000", "mp_rank_00_004", "mp_rank_01_001"]
    assert [files[(r % 4, 0, r)] for r in range(5)] == [
        "mp_rank_00_000",
        "mp_rank_01_001",
        "mp_rank_02_002",
        "mp_rank_03_003",
        "mp_rank_00_004",
    ]


def test_dense_shards_never_written_when_etp_ep_below_tp() -> None:
    with pytest.raises(ConversionError, match=r"tp ranks \[1\] are never saved"):
        expected_files(Sizes(tp=2, pp=1, ep=1, etp=1, experts=4))


def test_pp1_ep2_names_are_told_apart_by_args() -> None:
    args = {
        "tensor_model_parallel_size": 1,
        "pipeline_model_parallel_size": 1,
        "expert_model_parallel_size": 2,
    }
    sizes = sizes_from(
        {**args, "num_experts": 4, "expert_tensor_parallel_size": 1}, ["mp_rank_00_000", "mp_rank_00_001"]
    )
    assert (sizes.pp, sizes.ep) == (1, 2)
    with pytest.raises(ConversionError, match="ambiguous"):
        sizes_from({}, ["mp_rank_00_000", "mp_rank_00_001"])
    with pytest.raises(ConversionError, match="does not fit"):
        sizes_from({**args, "pipeline_model_parallel_size": 2}, ["mp_rank_00_000"])


def test_missing_ranks_are_all_named() -> None:
    sizes = Sizes(tp=2, pp=2, ep=1, etp=2, experts=0)
    with pytest.raises(ConversionError, match=r"mp_rank_00_001/model_optim_rng.pt, mp_rank_01_001/"):
        check_complete(sizes, {"mp_rank_00_000", "mp_rank_01_000"}, "iter_0000010")


def test_chunk_orders() -> None:
    assert chunk_order(2, ["model"], False)[1] == [(0, "model"), (1, "model")]
    assert chunk_order(2, ["model0", "model1"], False)[1] == [
        (0, "model0"),
        (1, "model0"),
        (0, "model1"),
        (1, "model1"),
    ]
    assert chunk_order(2, ["model0", "model1"], True) == (
        "dualpipev",
        [(0, "model0"), (1, "model0"), (1, "model1"), (0, "model1")],
    )


def test_vpp_offsets_interleave_stages() -> None:
    sizes = Sizes(tp=1, pp=2, ep=1, etp=1, experts=0)
    files = {(0, 0, 0): "mp_rank_00_000", (0, 1, 0): "mp_rank_00_001"}
    stage_keys = {
        (0, "model0"): _layer_keys(2, pre=True),
        (1, "model0"): _layer_keys(2),
        (0, "model1"): _layer_keys(2),
        (1, "model1"): _layer_keys(2, post=True),
    }
    found = build_layout(sizes, files, stage_keys, {"num_layers": 8}, 8)
    assert [(c.pp, c.key, c.first_layer) for c in found.chunks] == [
        (0, "model0", 0),
        (1, "model0", 2),
        (0, "model1", 4),
        (1, "model1", 6),
    ]
    assert found.schedule == "vpp" and found.to_json()["virtual_pipeline"] == 2


def test_layer_count_disagreements() -> None:
    sizes = Sizes(tp=1, pp=2, ep=1, etp=1, experts=0)
    files = {(0, 0, 0): "a", (0, 1, 0): "b"}
    stage_keys = {(0, "model"): _layer_keys(1, pre=True), (1, "model"): _layer_keys(3, post=True)}
    assert (
        build_layout(sizes, files, stage_keys, {"num_layers_in_first_pipeline_stage": 1}, 4)
        .chunks[1]
        .first_layer
        == 1
    )
    with pytest.raises(ConversionError, match=r"4 decoder layers.*num_hidden_layers=6"):
        build_layout(sizes, files, stage_keys, {}, 6)
    with pytest.raises(ConversionError, match="last pipeline stage has 2 layers"):
        build_layout(sizes, files, stage_keys, {"decoder_last_pipeline_num_layers": 2}, 4)
    with pytest.raises(ConversionError, match="not contiguous"):
        count_layers(["decoder.layers.0.x", "decoder.layers.2.x"])
