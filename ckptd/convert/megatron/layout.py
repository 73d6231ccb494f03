"""Pure inference of a legacy Megatron checkpoint's parallel layout from folder names, stored args
and tensor names (formats.md §1.2, §4.4, §9). No I/O: the reader gathers the facts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckptd.errors import ConversionError

_FOLDER = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$")
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")
PRE_KEY = "embedding.word_embeddings.weight"
POST_KEY = "decoder.final_layernorm.weight"


@dataclass(frozen=True)
class Sizes:
    tp: int
    pp: int
    ep: int
    etp: int
    experts: int


@dataclass(frozen=True)
class Chunk:
    """One model chunk of one pipeline stage: ``model`` or ``model{v}`` in the stage's files."""

    pp: int
    key: str
    first_layer: int
    layers: int


@dataclass(frozen=True)
class Layout:
    sizes: Sizes
    vpp: int
    schedule: str
    files: dict[tuple[int, int, int], str]  # (tp, pp, ep) -> folder name
    chunks: tuple[Chunk, ...]  # in global layer order
    extras: dict[str, Any] = field(default_factory=dict)

    def file_for(self, tp: int, pp: int, ep: int = 0) -> str:
        return self.files[(tp, pp, ep)]

    def to_json(self) -> dict[str, Any]:
        s = self.sizes
        return {
            "tensor_parallel": s.tp,
            "pipeline_parallel": s.pp,
            "virtual_pipeline": self.vpp,
            "expert_parallel": s.ep,
            "expert_tensor_parallel": s.etp,
            "experts": s.experts,
            "schedule": self.schedule,
            "rank_folders": sorted(self.files.values()),
            "stages": [
                {"pp": c.pp, "chunk": c.key, "first_layer": c.first_layer, "layers": c.layers}
                for c in self.chunks
            ],
            **self.extras,
        }


def _arg_int(args: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sizes_from(args: Mapping[str, Any], folders: Sequence[str]) -> Sizes:
    """Parallel sizes from the stored args, checked against (or, without args, read from) the folders."""
    if args.get("use_tp_pp_dp_mapping"):
        raise ConversionError("args.use_tp_pp_dp_mapping is set: that rank order is not supported yet")
    parsed = [parse_folder(name) for name in folders]
    widths = {len(p) for p in parsed}
    if len(widths) != 1:
        raise ConversionError(f"rank folders mix naming schemes: {sorted(folders)[:6]}")
    tp = _arg_int(args, "tensor_model_parallel_size") or max(p[0] for p in parsed) + 1
    pp = _arg_int(args, "pipeline_model_parallel_size")
    ep = _arg_int(args, "expert_model_parallel_size")
    width = widths.pop()
    if pp is None or ep is None:
        if width == 2:
            raise ConversionError(
                f"rank folders like {folders[0]} are ambiguous (mp_rank_TT_PPP or mp_rank_TT_EEE) and "
                "the stored args name no pipeline/expert parallel size"
            )
        pp = pp or (max(p[1] for p in parsed) + 1 if width == 3 else 1)
        ep = ep or (max(p[2] for p in parsed) + 1 if width == 3 else 1)
    expected_width = 1 + (pp > 1) + (ep > 1)
    if width != expected_width:
        raise ConversionError(
            f"rank folder {folders[0]} does not fit args pipeline_model_parallel_size={pp}, "
            f"expert_model_parallel_size={ep} (expected {expected_width} number(s) in the name)"
        )
    experts = _arg_int(args, "num_moe_experts", "num_experts") or 0
    etp = _arg_int(args, "expert_tensor_parallel_size") or tp
    return Sizes(tp=tp, pp=pp, ep=ep, etp=etp, experts=experts)


def parse_folder(name: str) -> tuple[int, ...]:
    match = _FOLDER.match(name)
    if match is None:
        raise ConversionError(f"{name}: not a Megatron rank folder (mp_rank_TT[_PPP][_EEE])")
    return tuple(int(group) for group in match.groups() if group is not None)


def folder_name(tp: int, pp: int, ep: int, sizes: Sizes) -> str:
    """Megatron's ``get_checkpoint_name`` spelling."""
    name = f"mp_rank_{tp:02d}"
    if sizes.pp > 1:
        name += f"_{pp:03d}"
    if sizes.ep > 1:
        name += f"_{ep:03d}"
    return name


def expected_files(sizes: Sizes) -> dict[tuple[int, int, int], str]:
    """Which (tp, pp, ep) ranks write a model file: expert-data-parallel rank 0 only (formats.md §1.2)."""
    writers = max(sizes.etp * sizes.ep, 1) if sizes.experts else sizes.tp
    ranks = {(r % sizes.tp, (r // sizes.etp) % sizes.ep if sizes.experts else 0) for r in range(writers)}
    missing_tp = sorted(set(range(sizes.tp)) - {tp for tp, _ in ranks})
    if missing_tp:
        raise ConversionError(
            f"expert_tensor_parallel·expert_parallel ({sizes.etp}·{sizes.ep}) < "
            f"tensor_parallel ({sizes.tp}): "
            f"dense shards of tp ranks {missing_tp} are never saved, so this checkpoint cannot be converted"
        )
    return {
        (tp, pp, ep): folder_name(tp, pp, ep, sizes) for pp in range(sizes.pp) for tp, ep in sorted(ranks)
    }


def check_complete(sizes: Sizes, present: set[str], iter_dir: str) -> dict[tuple[int, int, int], str]:
    expected = expected_files(sizes)
    missing = sorted(name for name in expected.values() if name not in present)
    if missing:
        shown = ", ".join(f"{name}/model_optim_rng.pt" for name in missing[:6])
        more = f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""
        raise ConversionError(
            f"{iter_dir}: missing rank file(s) {shown}{more} for tp={sizes.tp} pp={sizes.pp} ep={sizes.ep}"
        )
    return expected


def count_layers(keys: Sequence[str]) -> int:
    indices = {int(m.group(1)) for key in keys if (m := _LAYER.match(key))}
    if indices and indices != set(range(max(indices) + 1)):
        raise ConversionError(f"decoder layer indices are not contiguous from 0: {sorted(indices)[:8]}")
    return len(indices)


def chunk_order(
    pp: int, chunk_keys: Sequence[str], post_on_first_stage: bool
) -> tuple[str, list[tuple[int, str]]]:
    """Global order of (stage, chunk key): 1f1b, Megatron VPP interleaving, or RLinf dualpipev."""
    if chunk_keys == ["model"]:
        return "1f1b", [(p, "model") for p in range(pp)]
    vpp = len(chunk_keys)
    if vpp == 2 and pp > 1 and post_on_first_stage:
        return "dualpipev", [(p, "model0") for p in range(pp)] + [(p, "model1") for p in reversed(range(pp))]
    return "vpp", [(p, f"model{v}") for v in range(vpp) for p in range(pp)]


def _check_stage_args(args: Mapping[str, Any], chunks: Sequence[Chunk], pp: int, vpp: int) -> None:
    """Uneven first/last stages are stored under two spellings (formats.md §9): check both."""
    per_stage = [sum(c.layers for c in chunks if c.pp == p) for p in range(pp)]
    for position, stage in (("first", 0), ("last", pp - 1)):
        stored = _arg_int(
            args, f"decoder_{position}_pipeline_num_layers", f"num_layers_in_{position}_pipeline_stage"
        )
        if stored is not None and pp > 1 and stored != per_stage[stage]:
            raise ConversionError(
                f"args say the {position} pipeline stage has {stored} layers, "
                f"but its rank files hold {per_stage[stage]} (stages: {per_stage}, vpp={vpp})"
            )


def build_layout(
    sizes: Sizes,
    files: dict[tuple[int, int, int], str],
    stage_keys: Mapping[tuple[int, str], Sequence[str]],
    args: Mapping[str, Any],
    total_layers: int,
) -> Layout:
    """Place every stage's chunks on the global layer axis and check them against args and config."""
    chunk_keys = sorted({key for _, key in stage_keys}, key=lambda k: (len(k), k))
    last_key = chunk_keys[-1]
    post_first = sizes.pp > 1 and POST_KEY in stage_keys.get((0, last_key), ())
    schedule, order = chunk_order(sizes.pp, chunk_keys, post_first)
    chunks: list[Chunk] = []
    offset = 0
    for pp, key in order:
        if (pp, key) not in stage_keys:
            raise ConversionError(f"{files[(0, pp, 0)]}: model chunk {key!r} missing (other stages have it)")
        count = count_layers(stage_keys[(pp, key)])
        chunks.append(Chunk(pp=pp, key=key, first_layer=offset, layers=count))
        offset += count
    first, last = order[0], order[-1]
    if PRE_KEY not in stage_keys[first]:
        raise ConversionError(f"{files[(0, first[0], 0)]}[{first[1]}]: no {PRE_KEY} on the first stage")
    if POST_KEY not in stage_keys[last]:
        raise ConversionError(f"{files[(0, last[0], 0)]}[{last[1]}]: no {POST_KEY} on the last stage")
    stored_layers = _arg_int(args, "num_layers")
    if offset != total_layers or (stored_layers is not None and stored_layers != total_layers):
        raise ConversionError(
            f"rank files hold {offset} decoder layers, args.num_layers={stored_layers}, "
            f"config.json num_hidden_layers={total_layers}: base model and checkpoint disagree"
        )
    _check_stage_args(args, chunks, sizes.pp, len(chunk_keys))
    return Layout(sizes=sizes, vpp=len(chunk_keys), schedule=schedule, files=files, chunks=tuple(chunks))
