"""The streaming shard writer: real safetensors files, plan order, hashes, resume, prefetch errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ckptd.convert.fsdp.stream import StreamingShardWriter, prefetch
from ckptd.convert.writer import INDEX_NAME, ShardPlan, TensorSpec, plan_shards, sha256_file
from ckptd.errors import ConversionError

TENSORS = {
    "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "b": torch.tensor(3.5),  # 0-dim
    "c": torch.arange(5, dtype=torch.int64),
    "d": torch.ones(4, 2, dtype=torch.float32),
}


def _plan(limit: int) -> list[ShardPlan]:
    specs = [
        TensorSpec(k, tuple(v.shape), torch.bfloat16 if k == "d" else v.dtype) for k, v in TENSORS.items()
    ]
    return plan_shards(specs, limit)


def _produce(shard: ShardPlan) -> Iterator[dict[str, torch.Tensor]]:
    for spec in shard.tensors:
        yield {spec.name: TENSORS[spec.name]}


def test_streamed_shards_are_valid_safetensors_with_index_and_hashes(tmp_path: Path) -> None:
    writer = StreamingShardWriter(tmp_path, _plan(30))
    writer.write_all_streaming(_produce)
    records = writer.finish()
    assert len(records) == 3
    loaded: dict[str, torch.Tensor] = {}
    for record in records:
        assert sha256_file(tmp_path / record.filename) == record.sha256
        with safe_open(str(tmp_path / record.filename), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
        loaded.update(load_file(tmp_path / record.filename))
    for name, tensor in TENSORS.items():
        assert torch.equal(loaded[name], tensor.to(loaded[name].dtype))
    assert loaded["d"].dtype == torch.bfloat16
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == sum(r.tensor_bytes for r in records)
    assert StreamingShardWriter(tmp_path, _plan(30)).pending() == []  # a restart keeps them all


def test_out_of_order_or_missing_or_misshapen_tensors_are_refused(tmp_path: Path) -> None:
    shard = _plan(10**6)[0]
    writer = StreamingShardWriter(tmp_path, [shard])
    with pytest.raises(ConversionError, match="out of plan order"):
        writer.write_stream(shard, [{"b": TENSORS["b"]}])
    with pytest.raises(ConversionError, match="never arrived"):
        writer.write_stream(shard, [{"a": TENSORS["a"]}])
    with pytest.raises(ConversionError, match="shape"):
        writer.write_stream(shard, [{"a": torch.zeros(3, 2)}])
    assert writer.pending() == [shard]


def test_prefetch_keeps_order_and_reraises_producer_errors() -> None:
    assert list(prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    def broken() -> Iterator[int]:
        yield 1
        raise ConversionError("disk went away")

    with pytest.raises(ConversionError, match="disk went away"):
        list(prefetch(broken()))
