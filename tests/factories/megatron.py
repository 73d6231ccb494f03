"""Write HF weights as Megatron-Core's legacy ``save_checkpoint`` does: per-rank ``model_optim_rng.pt``.

Megatron is not installed: tiny stand-in modules are registered under the exact module paths real
files name (``megatron.core.enums.ModelType`` ...), so the pickles carry the same globals. The
sharding code here is written independently of ckptd's merge rules (formats.md §1.2, §3, §4).
"""

from __future__ import annotations

import enum
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from tests.factories.megatron_args import args_dict, file_extras, namespace_args, omegaconf_args

_ENUMS: dict[str, dict[str, dict[str, Any]]] = {
    "megatron.core.enums": {"ModelType": {"encoder_or_decoder": 1, "retro_encoder": 2}},
    "megatron.core.rerun_state_machine": {
        "RerunMode": {"DISABLED": "disabled", "VALIDATE_RESULTS": "validate_results"},
        "RerunState": {"NOT_RUNNING_YET": 0, "INITIAL_RUN": 1},
        "RerunDiagnostic": {"CORRECT_RESULT": "correct_result"},
    },
    "megatron.core.transformer.enums": {
        "AttnBackend": {"flash": 1, "fused": 2, "unfused": 3, "local": 4, "auto": 5}
    },
}


def megatron_enums() -> dict[str, Any]:
    """Register the stand-in modules once; return the enum classes by name."""
    found: dict[str, Any] = {}
    for module_name, classes in _ENUMS.items():
        parts = module_name.split(".")
        for depth in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
        module = sys.modules[module_name]
        for class_name, members in classes.items():
            if not hasattr(module, class_name):
                setattr(module, class_name, enum.Enum(class_name, members, module=module_name))
            found[class_name] = getattr(module, class_name)
    return found


@dataclass(frozen=True)
class MegatronLayout:
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    ep: int = 1
    etp: int = 1
    stages: tuple[int, ...] | None = None  # layers per stage (uneven first/last), 1f1b only
    dualpipev: bool = False
    te: bool = True  # TE fused-norm names, else the local spec
    args: Literal["namespace", "omegaconf", "none"] = "namespace"
    dtype: torch.dtype = torch.bfloat16
    padded_vocab: int | None = None  # rows stored for the embedding/output layer
    grouped_experts: bool = True  # TEGroupedMLP weight<i>, else SequentialMLP local_experts.i
    extra_state: Literal["default", "pickled_none", "fp8"] = "default"
    step: int = 10

    def with_(self, **changes: Any) -> MegatronLayout:
        return replace(self, **changes)


def file_state(base_dir: Path) -> dict[str, torch.Tensor]:
    """The HF file view of a saved model (per-expert keys, as the files hold them)."""
    state: dict[str, torch.Tensor] = {}
    for path in sorted(base_dir.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


@dataclass(frozen=True)
class _Dims:
    layers: int
    hidden: int
    heads: int
    groups: int
    head_dim: int
    vocab: int
    experts: int
    tied: bool
    moe: bool


def _dims(config: dict[str, Any]) -> _Dims:
    heads = config["num_attention_heads"]
    experts = config.get("num_experts") or config.get("num_local_experts") or 0
    return _Dims(
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        heads=heads,
        groups=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab=config["vocab_size"],
        experts=experts,
        tied=bool(config.get("tie_word_embeddings")),
        moe=experts > 0,
    )


def chunk_order(layout: MegatronLayout, layers: int) -> list[tuple[int, str, int]]:
    """(stage, chunk key, layer count) in global layer order."""
    if layout.dualpipev:
        seg = layers // (2 * layout.pp)
        return [(p, "model0", seg) for p in range(layout.pp)] + [
            (p, "model1", seg) for p in reversed(range(layout.pp))
        ]
    if layout.vpp > 1:
        seg = layers // (layout.pp * layout.vpp)
        return [(p, f"model{v}", seg) for v in range(layout.vpp) for p in range(layout.pp)]
    stages = layout.stages or tuple(layers // layout.pp for _ in range(layout.pp))
    assert sum(stages) == layers
    return [(p, "model", count) for p, count in enumerate(stages)]


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: _Dims) -> torch.Tensor:
    tail = tuple(q.shape[1:])
    per = d.heads // d.groups
    blocks = [
        q.reshape(d.groups, per, d.head_dim, *tail),
        k.reshape(d.groups, 1, d.head_dim, *tail),
        v.reshape(d.groups, 1, d.head_dim, *tail),
    ]
    return torch.cat(blocks, dim=1).reshape(-1, *tail)


def _shard(kind: str, tensors: list[torch.Tensor], parts: int, rank: int) -> torch.Tensor:
    if kind == "rep":
        return tensors[0]
    if kind == "col":
        return tensors[0].chunk(parts, dim=0)[rank]
    if kind == "row":
        return tensors[0].chunk(parts, dim=1)[rank]
    gate, up = tensors  # glu: each rank holds [gate_r; up_r]
    return torch.cat([gate.chunk(parts, dim=0)[rank], up.chunk(parts, dim=0)[rank]], dim=0)


def _attention(
    hf: dict[str, torch.Tensor], g: int, d: _Dims, te: bool
) -> list[tuple[str, str, list[torch.Tensor]]]:
    p = f"model.layers.{g}."
    a = f"{p}self_attn."
    norm = "self_attention.linear_qkv.layer_norm_weight" if te else "input_layernorm.weight"
    out = [
        (norm, "rep", [hf[f"{p}input_layernorm.weight"]]),
        (
            "self_attention.linear_qkv.weight",
            "col",
            [_fuse_qkv(*(hf[f"{a}{x}_proj.weight"] for x in "qkv"), d)],
        ),
        ("self_attention.linear_proj.weight", "row", [hf[f"{a}o_proj.weight"]]),
    ]
    if f"{a}q_proj.bias" in hf:
        out.append(
            (
                "self_attention.linear_qkv.bias",
                "col",
                [_fuse_qkv(*(hf[f"{a}{x}_proj.bias"] for x in "qkv"), d)],
            )
        )
    if f"{a}q_norm.weight" in hf:
        out.append(("self_attention.q_layernorm.weight", "rep", [hf[f"{a}q_norm.weight"]]))
        out.append(("self_attention.k_layernorm.weight", "rep", [hf[f"{a}k_norm.weight"]]))
    return out


def _mlp(hf: dict[str, torch.Tensor], g: int, te: bool) -> list[tuple[str, str, list[torch.Tensor]]]:
    p = f"model.layers.{g}."
    if f"{p}mlp.gate.weight" not in hf:
        norm = "mlp.linear_fc1.layer_norm_weight" if te else "pre_mlp_layernorm.weight"
        return [
            (norm, "rep", [hf[f"{p}post_attention_layernorm.weight"]]),
            ("mlp.linear_fc1.weight", "glu", [hf[f"{p}mlp.gate_proj.weight"], hf[f"{p}mlp.up_proj.weight"]]),
            ("mlp.linear_fc2.weight", "row", [hf[f"{p}mlp.down_proj.weight"]]),
        ]
    out = [
        ("pre_mlp_layernorm.weight", "rep", [hf[f"{p}post_attention_layernorm.weight"]]),
        ("mlp.router.weight", "rep", [hf[f"{p}mlp.gate.weight"]]),
    ]
    s = f"{p}mlp.shared_expert."
    if f"{s}gate_proj.weight" in hf:
        out += [
            (
                "mlp.shared_experts.linear_fc1.weight",
                "glu",
                [hf[f"{s}gate_proj.weight"], hf[f"{s}up_proj.weight"]],
            ),
            ("mlp.shared_experts.linear_fc2.weight", "row", [hf[f"{s}down_proj.weight"]]),
            ("mlp.shared_experts.gate_weight", "rep", [hf[f"{p}mlp.shared_expert_gate.weight"]]),
        ]
    return out


def _experts(hf: dict[str, torch.Tensor], g: int, e: int) -> list[tuple[str, str, list[torch.Tensor]]]:
    x = f"model.layers.{g}.mlp.experts.{e}."
    return [
        ("fc1", "glu", [hf[f"{x}gate_proj.weight"], hf[f"{x}up_proj.weight"]]),
        ("fc2", "row", [hf[f"{x}down_proj.weight"]]),
    ]


def _expert_name(fc: str, local: int, grouped: bool) -> str:
    return (
        f"mlp.experts.linear_{fc}.weight{local}"
        if grouped
        else f"mlp.experts.local_experts.{local}.linear_{fc}.weight"
    )


def _extra(layout: MegatronLayout) -> Any:
    if layout.extra_state == "pickled_none":
        return torch.tensor(list(b"\x80\x04N."), dtype=torch.uint8)
    if layout.extra_state == "fp8":
        return torch.arange(64, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8) if layout.te else None


def _padded(table: torch.Tensor, rows: int | None, seed: int) -> torch.Tensor:
    if rows is None or rows == table.shape[0]:
        return table
    if rows < table.shape[0]:
        return table[:rows]
    noise = torch.randn(
        (rows - table.shape[0], table.shape[1]), generator=torch.Generator().manual_seed(seed)
    )
    return torch.cat([table, noise.to(table.dtype)], dim=0)


def _clone(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Megatron params own their storage; saving a view would save the whole parent storage.
    return tensor.to(dtype).clone().contiguous()


def _layer(
    *,
    sd: OrderedDict[str, Any],
    hf: dict[str, torch.Tensor],
    d: _Dims,
    g: int,
    local: int,
    rank: tuple[int, int],
    layout: MegatronLayout,
) -> None:
    tp_rank, ep_rank = rank
    prefix = f"decoder.layers.{local}."
    for name, kind, tensors in _attention(hf, g, d, layout.te) + _mlp(hf, g, layout.te):
        sd[prefix + name] = _clone(_shard(kind, tensors, layout.tp, tp_rank), layout.dtype)
    modules = ["self_attention.linear_qkv", "self_attention.linear_proj"]
    if layout.te:
        modules.append("self_attention.core_attention")
    is_moe = f"model.layers.{g}.mlp.gate.weight" in hf
    modules += (
        ["mlp.experts.linear_fc1", "mlp.experts.linear_fc2"]
        if is_moe and layout.grouped_experts and layout.te
        else []
    )
    modules += [] if is_moe else ["mlp.linear_fc1", "mlp.linear_fc2"]
    for module in modules:
        sd[f"{prefix}{module}._extra_state"] = _extra(layout)
    if not is_moe:
        return
    per_rank = d.experts // layout.ep
    for local_e in range(per_rank):
        for fc, kind, tensors in _experts(hf, g, ep_rank * per_rank + local_e):
            piece = _shard(kind, tensors, layout.etp, tp_rank % layout.etp)
            sd[prefix + _expert_name(fc, local_e, layout.grouped_experts)] = _clone(piece, layout.dtype)


def _chunk(
    *,
    hf: dict[str, torch.Tensor],
    d: _Dims,
    layout: MegatronLayout,
    rank: tuple[int, int],
    where: tuple[int, int, bool, bool],
    stage: int,
) -> OrderedDict[str, Any]:
    first, count, pre, post = where
    tp_rank = rank[0]
    sd: OrderedDict[str, Any] = OrderedDict()
    embed = _padded(hf["model.embed_tokens.weight"], layout.padded_vocab, seed=7)
    if pre:
        sd["embedding.word_embeddings.weight"] = _clone(
            _shard("col", [embed], layout.tp, tp_rank), layout.dtype
        )
    for local in range(count):
        _layer(sd=sd, hf=hf, d=d, g=first + local, local=local, rank=rank, layout=layout)
    if post:
        sd["decoder.final_layernorm.weight"] = _clone(hf["model.norm.weight"], layout.dtype)
        head = None if d.tied else _padded(hf["lm_head.weight"], layout.padded_vocab, seed=8)
        if d.tied and stage != 0:
            head = embed  # Megatron keeps a synced copy of a tied embedding on the last stage
        if head is not None:
            sd["output_layer.weight"] = _clone(_shard("col", [head], layout.tp, tp_rank), layout.dtype)
        if not layout.te:
            sd["output_layer._extra_state"] = None
    return sd


def writers(layout: MegatronLayout, moe: bool) -> list[tuple[int, int]]:
    """(tp rank, ep rank) of the ranks that save a model file in each stage (formats.md §1.2)."""
    count = layout.etp * layout.ep if moe else layout.tp
    return sorted({(r % layout.tp, (r // layout.etp) % layout.ep if moe else 0) for r in range(count)})


def folder(tp: int, pp: int, ep: int, layout: MegatronLayout) -> str:
    name = f"mp_rank_{tp:02d}"
    name += f"_{pp:03d}" if layout.pp > 1 else ""
    return name + (f"_{ep:03d}" if layout.ep > 1 else "")


def save_megatron(
    base_dir: Path, step_dir: Path, layout: MegatronLayout, hf: dict[str, torch.Tensor] | None = None
) -> Path:
    """Shard ``base_dir``'s weights (or ``hf``, in HF file names) into ``<step_dir>/actor`` like
    Megatron's legacy save; returns the actor dir."""
    import json

    config = json.loads((base_dir / "config.json").read_text())
    d = _dims(config)
    hf = file_state(base_dir) if hf is None else hf
    order = chunk_order(layout, d.layers)
    values = args_dict(layout, d, config)
    args = {"namespace": namespace_args, "omegaconf": omegaconf_args}.get(layout.args)
    iter_dir = step_dir / "actor" / f"iter_{layout.step:07d}"
    for pp in range(layout.pp):
        for tp_rank, ep_rank in writers(layout, d.moe):
            state: dict[str, Any] = {} if args is None else {"args": args(values), **file_extras(layout)}
            offset = 0
            for index, (stage, key, count) in enumerate(order):
                if stage == pp:
                    where = (offset, count, index == 0, index == len(order) - 1)
                    state[key] = _chunk(
                        hf=hf, d=d, layout=layout, rank=(tp_rank, ep_rank), where=where, stage=stage
                    )
                offset += count
            rank_dir = iter_dir / folder(tp_rank, pp, ep_rank, layout)
            rank_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"buckets_coalesced": True}, rank_dir / "distrib_optim.pt")
            torch.save(state, rank_dir / "model_optim_rng.pt")
    (step_dir / "actor" / "latest_checkpointed_iteration.txt").write_text(str(layout.step))
    return step_dir / "actor"


def make_checkpoint(root: Path, kind: str, layout: MegatronLayout, **overrides: Any) -> tuple[Path, Path]:
    """A tiny HF base model (in the layout's dtype) and its Megatron checkpoint: (base dir, step dir)."""
    from tests.factories.tiny_hf import build_model, save_base_model

    model = build_model(kind, dtype=layout.dtype, **overrides)
    base = save_base_model(model, root / "base")
    step_dir = root / "run" / "checkpoints" / f"global_step_{layout.step}"
    save_megatron(base, step_dir, layout)
    return base, step_dir


def assert_same_weights(base: Path, out: Path) -> None:
    """Every output tensor bit-exact against the base model's files (tied lm_head absent from both)."""
    import json

    expected, got = file_state(base), file_state(out)
    if json.loads((base / "config.json").read_text()).get("tie_word_embeddings"):
        expected.pop("lm_head.weight", None)
    assert sorted(got) == sorted(expected), sorted(set(got) ^ set(expected))[:5]
    differ = [k for k, v in expected.items() if got[k].dtype != v.dtype or not torch.equal(got[k], v)]
    assert not differ, differ[:5]
