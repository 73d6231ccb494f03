"""Pure planning: which Megatron pieces make each HF tensor, checked against shapes, and how the
output is cut into shards (by layer, so each source tensor is read exactly once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ckptd.convert.megatron.layout import Chunk, Layout
from ckptd.convert.megatron.merge import piece_shape
from ckptd.convert.megatron.reader import TensorMeta
from ckptd.convert.writer import ShardPlan, TensorSpec
from ckptd.errors import ConversionError
from ckptd.models.base import (
    EMBEDDING,
    FINAL_NORM,
    OUTPUT_LAYER,
    Architecture,
    Dims,
    Merge,
    Rule,
    Shape,
)

# folder -> chunk -> key -> meta
Index = Mapping[str, Mapping[str, Mapping[str, TensorMeta]]]
_MLA_MARKERS = ("linear_q_down_proj", "linear_kv_down_proj", "linear_q_proj", "linear_kv_up_proj")


@dataclass(frozen=True)
class Piece:
    folder: str
    chunk: str
    key: str


@dataclass(frozen=True)
class Item:
    """One Megatron tensor (its parallel pieces) and the HF tensor(s) it becomes."""

    hf: tuple[str, ...]
    shapes: tuple[Shape, ...]
    merge: Merge
    pieces: tuple[Piece, ...]
    dtype: torch.dtype
    same_as: tuple[Piece, ...] = ()  # tied copy on the last stage: must equal ``pieces``

    @property
    def read_bytes(self) -> int:
        return self.out_bytes * (2 if self.same_as else 1)

    @property
    def out_bytes(self) -> int:
        return sum(_numel(shape) for shape in self.shapes) * self.dtype.itemsize


def _numel(shape: Shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class Planner:
    """Resolves names against what the rank files hold; collects every key it consumes."""

    def __init__(self, layout: Layout, index: Index, dims: Dims) -> None:
        self.layout = layout
        self.index = index
        self.dims = dims
        self.consumed: dict[tuple[int, str], set[str]] = {}

    def dense_file(self, tp: int, pp: int) -> str:
        return min((ep, name) for (t, p, ep), name in self.layout.files.items() if t == tp and p == pp)[1]

    def expert_file(self, etp_rank: int, pp: int, ep: int) -> str:
        etp = self.layout.sizes.etp
        names = [
            n for (t, p, e), n in self.layout.files.items() if p == pp and e == ep and t % etp == etp_rank
        ]
        if not names:
            raise ConversionError(f"no rank file holds experts of ep rank {ep}, etp rank {etp_rank}, pp {pp}")
        return min(names)

    def meta(self, piece: Piece) -> TensorMeta | None:
        return self.index[piece.folder].get(piece.chunk, {}).get(piece.key)

    def resolve(self, folder: str, chunk: Chunk | tuple[int, str], names: Sequence[str]) -> Piece:
        pp, key = (chunk.pp, chunk.key) if isinstance(chunk, Chunk) else chunk
        for name in names:
            piece = Piece(folder, key, name)
            if isinstance(self.meta(piece), tuple):
                self.consumed.setdefault((pp, key), set()).add(name)
                return piece
        hint = ""
        if names[0].endswith("shared_experts.gate_weight"):
            hint = " (Megatron-Core before 0.16 saves no shared-expert gate; HF Qwen2-MoE needs one)"
        raise ConversionError(f"{folder}[{key}]: missing tensor {' or '.join(names)}{hint}")

    def item(self, hf: Sequence[str], shapes: Sequence[Shape], merge: Merge, pieces: list[Piece]) -> Item:
        expected = piece_shape(merge, shapes, len(pieces))
        dtypes = set()
        for piece in pieces:
            meta = self.meta(piece)
            assert isinstance(meta, tuple)
            shape, dtype = meta
            dtypes.add(dtype)
            if expected is not None and shape != expected:
                raise ConversionError(
                    f"{piece.folder}[{piece.chunk}] {piece.key}: shape {shape} but {expected} expected "
                    f"from config.json (hidden={self.dims.hidden}, heads={self.dims.heads}, "
                    f"groups={self.dims.groups}, head_dim={self.dims.head_dim}, ffn={self.dims.ffn}) "
                    f"and a {len(pieces)}-way split"
                )
        if len(dtypes) != 1:
            raise ConversionError(
                f"{pieces[0].key}: parallel pieces differ in dtype: {sorted(map(str, dtypes))}"
            )
        return Item(tuple(hf), tuple(shapes), merge, tuple(pieces), dtypes.pop())

    def rule_items(self, rule: Rule, chunk: Chunk, local: int) -> list[Item]:
        layer = chunk.first_layer + local
        names = [f"decoder.layers.{local}.{mg}" for mg in rule.mg]
        hf = [f"model.layers.{layer}.{name}" for name in rule.hf]
        shapes = rule.shapes(self.dims)
        if rule.scope == "expert":
            return self.expert_items(rule, chunk, names, hf, shapes)
        parts = 1 if rule.merge == "rep" else self.layout.sizes.tp
        pieces = [self.resolve(self.dense_file(t, chunk.pp), chunk, names) for t in range(parts)]
        return [self.item(hf, shapes, rule.merge, pieces)]

    def expert_items(
        self, rule: Rule, chunk: Chunk, names: list[str], hf: list[str], shapes: tuple[Shape, ...]
    ) -> list[Item]:
        sizes = self.layout.sizes
        per_rank = sizes.experts // sizes.ep
        items = []
        for expert in range(sizes.experts):
            ep, local = divmod(expert, per_rank)
            local_names = [name.format(i=local) for name in names]
            files = [self.expert_file(j, chunk.pp, ep) for j in range(sizes.etp)]
            pieces = [self.resolve(folder, chunk, local_names) for folder in files]
            items.append(self.item([n.format(e=expert) for n in hf], shapes, rule.merge, pieces))
        return items

    def vocab_item(self, hf: str, names: Sequence[str], where: tuple[int, str]) -> Item:
        tp = self.layout.sizes.tp
        pieces = [self.resolve(self.dense_file(t, where[0]), where, names) for t in range(tp)]
        item = self.item([hf], [(self.dims.vocab, self.dims.hidden)], "vocab", pieces)
        self.check_vocab_pieces(item)
        return item

    def check_vocab_pieces(self, item: Item) -> None:
        for piece in item.pieces:
            meta = self.meta(piece)
            assert isinstance(meta, tuple)
            if len(meta[0]) != 2 or meta[0][1] != self.dims.hidden:
                raise ConversionError(
                    f"{piece.folder}[{piece.chunk}] {piece.key}: shape {meta[0]} but "
                    f"[rows, {self.dims.hidden}] expected from config.json hidden_size"
                )


def _output_items(planner: Planner, embedding: Item, post: tuple[int, str]) -> tuple[Item, list[Item]]:
    """lm_head when untied; when tied, a last-stage copy (PP>1) is consumed and checked equal."""
    folder = planner.dense_file(0, post[0])
    present = isinstance(planner.meta(Piece(folder, post[1], OUTPUT_LAYER[0])), tuple)
    if not planner.dims.tied:
        if not present:
            raise ConversionError(
                f"{folder}[{post[1]}]: no {OUTPUT_LAYER[0]}, but config.json says tie_word_embeddings=false"
            )
        return embedding, [planner.vocab_item(OUTPUT_LAYER[1], [OUTPUT_LAYER[0]], post)]
    if not present:
        return embedding, []
    copy = planner.vocab_item("tied-copy", [OUTPUT_LAYER[0]], post)
    for mine, theirs in zip(embedding.pieces, copy.pieces, strict=True):
        if planner.meta(mine) != planner.meta(theirs):
            raise ConversionError(
                f"{theirs.folder} {theirs.key} {planner.meta(theirs)} differs from the tied embedding "
                f"{mine.folder} {planner.meta(mine)}"
            )
    return Item(embedding.hf, embedding.shapes, "vocab", embedding.pieces, embedding.dtype, copy.pieces), []


def _check_consumed(planner: Planner, arch: Architecture) -> None:
    stage_of = {folder: pp for (_, pp, _), folder in planner.layout.files.items()}
    for folder, chunks in planner.index.items():
        for chunk, entries in chunks.items():
            used = planner.consumed.get((stage_of[folder], chunk), set())
            left = sorted(k for k in entries if k not in used and not k.endswith("_extra_state"))
            if not left:
                continue
            if any(marker in key for key in left for marker in _MLA_MARKERS):
                raise ConversionError(
                    f"{folder}[{chunk}]: multi-latent attention (DeepSeek MLA) tensors such as {left[0]}: "
                    "not supported yet"
                )
            raise ConversionError(
                f"{folder}[{chunk}]: {len(left)} tensor(s) not covered by the {arch.name} name table, e.g. "
                f"{', '.join(left[:4])}; the checkpoint does not match the base model's architecture"
            )


def build_items(arch: Architecture, layout: Layout, index: Index, dims: Dims) -> list[Item]:
    planner = Planner(layout, index, dims)
    first, last = layout.chunks[0], layout.chunks[-1]
    embedding = planner.vocab_item(EMBEDDING[1], [EMBEDDING[0]], (first.pp, first.key))
    layers: list[Item] = []
    for chunk in layout.chunks:
        for local in range(chunk.layers):
            for rule in arch.layer_rules(chunk.first_layer + local in dims.moe_layers):
                layers += planner.rule_items(rule, chunk, local)
    post = (last.pp, last.key)
    norm_piece = planner.resolve(planner.dense_file(0, last.pp), post, [FINAL_NORM[0]])
    norm = planner.item([FINAL_NORM[1]], [(dims.hidden,)], "rep", [norm_piece])
    embedding, head = _output_items(planner, embedding, post)
    _check_consumed(planner, arch)
    return [embedding, *layers, norm, *head]


def shard_items(
    items: Sequence[Item], max_bytes: int, out_dtype: Mapping[str, torch.dtype]
) -> tuple[list[ShardPlan], dict[str, list[Item]]]:
    """Greedy packing of whole items in layer order; an item over the limit gets its own shard."""
    groups: list[list[Item]] = []
    size = 0
    for item in items:
        nbytes = sum(_numel(s) * out_dtype[n].itemsize for n, s in zip(item.hf, item.shapes, strict=True))
        if not groups or (groups[-1] and size + nbytes > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += nbytes
    plans: list[ShardPlan] = []
    by_file: dict[str, list[Item]] = {}
    for number, group in enumerate(groups, start=1):
        specs = tuple(
            TensorSpec(name, shape, out_dtype[name])
            for item in group
            for name, shape in zip(item.hf, item.shapes, strict=True)
        )
        plan = ShardPlan(number, len(groups), specs)
        plans.append(plan)
        by_file[plan.filename] = group
    return plans, by_file
