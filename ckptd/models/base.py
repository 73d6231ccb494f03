"""Declarative pieces every architecture file is built from: dimensions, name rules, shapes.

A :class:`Rule` maps one Megatron tensor (any of several spellings: TE fused norms or local-spec
names) to one or more HF tensors, with the rule that merges its tensor-parallel pieces. Shapes are
the HF file shapes, computed from the base model's ``config.json`` through :class:`Dims`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ckptd.errors import ConfigError

# rep: replicated; col/row: concat dim 0/1; qkv: fused QKV by query group; glu: [gate_r; up_r] shards;
# vocab: vocab-parallel rows, trimmed or padded to config.vocab_size.
Merge = Literal["rep", "col", "row", "qkv", "glu", "vocab"]
# Where a rule applies: attention (every layer), dense MLP layers, MoE layers, routed experts
# (one copy per global expert, parallel over expert-TP), shared experts.
Scope = Literal["attn", "dense", "moe", "expert", "shared"]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Dims:
    layers: int
    hidden: int
    heads: int
    groups: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    experts: int = 0
    moe_ffn: int = 0
    shared_ffn: int = 0
    moe_layers: tuple[int, ...] = ()

    @property
    def q_rows(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_rows(self) -> int:
        return self.groups * self.head_dim


@dataclass(frozen=True)
class Rule:
    mg: tuple[str, ...]  # accepted Megatron suffixes under decoder.layers.{l}.; {i} = local expert
    hf: tuple[str, ...]  # HF suffixes under model.layers.{g}.; {e} = global expert
    merge: Merge
    shapes: Callable[[Dims], tuple[Shape, ...]]
    scope: Scope = "attn"


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]
    rules: tuple[Rule, ...]

    def layer_rules(self, moe_layer: bool) -> tuple[Rule, ...]:
        wanted = {"attn", "moe", "expert", "shared"} if moe_layer else {"attn", "dense"}
        return tuple(rule for rule in self.rules if rule.scope in wanted)


def _int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return int(value)
    if default is None:
        raise ConfigError(f"config.json: none of {list(keys)} is set; cannot size the model")
    return default


def dims_from_config(config: dict[str, Any]) -> Dims:
    """Dimensions from a transformers config dict (``AutoConfig(...).to_dict()``: defaults resolved)."""
    layers = _int(config, "num_hidden_layers")
    heads = _int(config, "num_attention_heads")
    hidden = _int(config, "hidden_size")
    experts = _int(config, "num_experts", "num_local_experts", default=0)
    sparse_step = _int(config, "decoder_sparse_step", default=1)
    dense_only = set(config.get("mlp_only_layers") or [])
    moe_layers = tuple(
        g for g in range(layers) if experts and g not in dense_only and (g + 1) % sparse_step == 0
    )
    return Dims(
        layers=layers,
        hidden=hidden,
        heads=heads,
        groups=_int(config, "num_key_value_heads", default=heads),
        head_dim=_int(config, "head_dim", default=hidden // heads),
        ffn=_int(config, "intermediate_size"),
        vocab=_int(config, "vocab_size"),
        tied=bool(config.get("tie_word_embeddings", False)),
        experts=experts,
        moe_ffn=_int(config, "moe_intermediate_size", default=0),
        shared_ffn=_int(config, "shared_expert_intermediate_size", default=0),
        moe_layers=moe_layers,
    )


SA = "self_attention."


def attention(*, qkv_bias: bool = False, qk_norm: bool = False) -> tuple[Rule, ...]:
    rules = [
        Rule(
            (f"{SA}linear_qkv.layer_norm_weight", "input_layernorm.weight"),
            ("input_layernorm.weight",),
            "rep",
            lambda d: ((d.hidden,),),
        ),
        Rule(
            (f"{SA}linear_qkv.weight",),
            ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
            "qkv",
            lambda d: ((d.q_rows, d.hidden), (d.kv_rows, d.hidden), (d.kv_rows, d.hidden)),
        ),
        Rule(
            (f"{SA}linear_proj.weight",),
            ("self_attn.o_proj.weight",),
            "row",
            lambda d: ((d.hidden, d.q_rows),),
        ),
    ]
    if qkv_bias:
        rules.append(
            Rule(
                (f"{SA}linear_qkv.bias",),
                ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
                "qkv",
                lambda d: ((d.q_rows,), (d.kv_rows,), (d.kv_rows,)),
            )
        )
    if qk_norm:
        rules += [
            Rule(
                (f"{SA}q_layernorm.weight",), ("self_attn.q_norm.weight",), "rep", lambda d: ((d.head_dim,),)
            ),
            Rule(
                (f"{SA}k_layernorm.weight",), ("self_attn.k_norm.weight",), "rep", lambda d: ((d.head_dim,),)
            ),
        ]
    return tuple(rules)


def dense_mlp() -> tuple[Rule, ...]:
    return (
        Rule(
            ("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"),
            ("post_attention_layernorm.weight",),
            "rep",
            lambda d: ((d.hidden,),),
            "dense",
        ),
        Rule(
            ("mlp.linear_fc1.weight",),
            ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
            "glu",
            lambda d: ((d.ffn, d.hidden), (d.ffn, d.hidden)),
            "dense",
        ),
        Rule(
            ("mlp.linear_fc2.weight",),
            ("mlp.down_proj.weight",),
            "row",
            lambda d: ((d.hidden, d.ffn),),
            "dense",
        ),
    )


def moe_mlp(*, shared: bool = False) -> tuple[Rule, ...]:
    return (*routed_experts(), *(shared_expert() if shared else ()))


def routed_experts() -> tuple[Rule, ...]:
    return (
        Rule(
            ("pre_mlp_layernorm.weight",),
            ("post_attention_layernorm.weight",),
            "rep",
            lambda d: ((d.hidden,),),
            "moe",
        ),
        Rule(("mlp.router.weight",), ("mlp.gate.weight",), "rep", lambda d: ((d.experts, d.hidden),), "moe"),
        Rule(
            ("mlp.experts.linear_fc1.weight{i}", "mlp.experts.local_experts.{i}.linear_fc1.weight"),
            ("mlp.experts.{e}.gate_proj.weight", "mlp.experts.{e}.up_proj.weight"),
            "glu",
            lambda d: ((d.moe_ffn, d.hidden), (d.moe_ffn, d.hidden)),
            "expert",
        ),
        Rule(
            ("mlp.experts.linear_fc2.weight{i}", "mlp.experts.local_experts.{i}.linear_fc2.weight"),
            ("mlp.experts.{e}.down_proj.weight",),
            "row",
            lambda d: ((d.hidden, d.moe_ffn),),
            "expert",
        ),
    )


def shared_expert() -> tuple[Rule, ...]:
    """Megatron's ``shared_experts`` (plural) as HF Qwen2-MoE's ``shared_expert`` plus its gate."""
    return (
        Rule(
            ("mlp.shared_experts.linear_fc1.weight",),
            ("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight"),
            "glu",
            lambda d: ((d.shared_ffn, d.hidden), (d.shared_ffn, d.hidden)),
            "shared",
        ),
        Rule(
            ("mlp.shared_experts.linear_fc2.weight",),
            ("mlp.shared_expert.down_proj.weight",),
            "row",
            lambda d: ((d.hidden, d.shared_ffn),),
            "shared",
        ),
        # Only Megatron-Core 0.16+ (--moe-shared-expert-gate) writes this; without it the model is
        # not an HF Qwen2-MoE, so a missing gate is an error rather than something to invent.
        Rule(
            ("mlp.shared_experts.gate_weight",),
            ("mlp.shared_expert_gate.weight",),
            "rep",
            lambda d: ((1, d.hidden),),
            "shared",
        ),
    )


# Outside the decoder layers: (Megatron name, HF name, merge).
EMBEDDING = ("embedding.word_embeddings.weight", "model.embed_tokens.weight")
FINAL_NORM = ("decoder.final_layernorm.weight", "model.norm.weight")
OUTPUT_LAYER = ("output_layer.weight", "lm_head.weight")


def expert_names(rule: Rule, experts: int) -> list[tuple[int, tuple[str, ...]]]:
    return [(e, tuple(name.format(e=e) for name in rule.hf)) for e in range(experts)]


def expected_shapes(arch: Architecture, dims: Dims) -> dict[str, Shape]:
    """Every HF file key this architecture needs, with its shape (the verification contract)."""
    shapes: dict[str, Shape] = {EMBEDDING[1]: (dims.vocab, dims.hidden), FINAL_NORM[1]: (dims.hidden,)}
    if not dims.tied:
        shapes[OUTPUT_LAYER[1]] = (dims.vocab, dims.hidden)
    for g in range(dims.layers):
        for rule in arch.layer_rules(g in dims.moe_layers):
            copies = expert_names(rule, dims.experts) if rule.scope == "expert" else [(0, rule.hf)]
            for _, names in copies:
                for name, shape in zip(names, rule.shapes(dims), strict=True):
                    shapes[f"model.layers.{g}.{name}"] = shape
    return shapes
