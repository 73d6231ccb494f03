"""Pure key handling for FSDP checkpoints (formats.md §2.4, §2.5, §2.7): no I/O, no torch."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ckptd.errors import ConversionError

# Where the model's tensors sit inside the saved object, in RLinf's order of preference.
MODEL_PATHS: tuple[tuple[str, ...], ...] = (
    ("fsdp_checkpoint", "model"),
    ("state_dict",),
    ("model_state_dict",),
    ("model",),
    ("module",),
    (),
)
PEFT_PREFIX = "base_model.model."
# FSDP1 / activation-checkpoint wrappers leave these anywhere in a name when a trainer does not use
# get_model_state_dict; FSDP2 never writes them (§2.7) but other trainers may.
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
_UNSUPPORTED_PEFT = re.compile(r"\.(lora_embedding_[AB]|lora_magnitude_vector|lora_[AB]\.[^.]+\.bias)")
_NUMBER = re.compile(r"(\d+)")


def select_model_path(paths: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The first of :data:`MODEL_PATHS` that is a strict prefix of some tensor's nesting path."""
    all_paths = list(paths)
    for prefix in MODEL_PATHS:
        if any(len(path) > len(prefix) and path[: len(prefix)] == prefix for path in all_paths):
            return prefix
    return ()


def relative_key(path: tuple[str | int, ...], prefix: tuple[str, ...]) -> str:
    """A tensor's name below the model path; parameter names may contain dots (one path element)."""
    return ".".join(str(part) for part in path[len(prefix) :])


def normalise_key(key: str) -> str:
    """RLinf's steps 3 (leading ``_orig_mod.`` then ``module.``, once each) plus wrapper removal."""
    key = key.removeprefix("_orig_mod.")
    key = key.removeprefix("module.")
    for part in _WRAPPER_PARTS:
        key = key.replace(part, "")
    return key


@dataclass(frozen=True)
class LoraPair:
    """One LoRA-adapted linear layer: ``target`` is the HF weight name the delta belongs to."""

    module: str  # HF module path, e.g. model.layers.0.self_attn.q_proj
    a_key: str  # source keys, as the reader names them
    b_key: str

    @property
    def target(self) -> str:
        return f"{self.module}.weight"


@dataclass
class KeyMap:
    """HF output name -> source key for plain weights, plus the LoRA pairs found."""

    weights: dict[str, str] = field(default_factory=dict)
    lora: dict[str, LoraPair] = field(default_factory=dict)  # by target weight name
    peft: bool = False
    adapter_name: str | None = None


def _hf_name(key: str, peft: bool) -> str:
    if peft:
        key = key.removeprefix(PEFT_PREFIX)
    # RLinf step 4: PEFT's base_layer wrapper disappears anywhere in the name.
    return key.replace(".base_layer.", ".")


def _add_lora(keymap: KeyMap, raw: str, match: re.Match[str], halves: dict[str, dict[str, str]]) -> None:
    adapter = match.group("adapter")
    if keymap.adapter_name not in (None, adapter):
        raise ConversionError(
            f"several LoRA adapters in one checkpoint ({keymap.adapter_name!r}, {adapter!r}); "
            "only a single adapter can be converted"
        )
    keymap.adapter_name = adapter
    module = _hf_name(match.group("module"), keymap.peft)
    halves.setdefault(module, {})[match.group("ab")] = raw


def map_keys(raw_keys: Iterable[str]) -> KeyMap:
    """Sort source keys into HF weights and LoRA pairs; refuse collisions and unsupported PEFT parts."""
    normalised: dict[str, str] = {}
    for raw in raw_keys:
        key = normalise_key(raw)
        if key in normalised:
            raise ConversionError(f"{raw} and {normalised[key]} both normalise to {key}")
        normalised[key] = raw
    keymap = KeyMap(peft=any(key.startswith(PEFT_PREFIX) for key in normalised))
    halves: dict[str, dict[str, str]] = {}
    for key, raw in sorted(normalised.items()):
        if _UNSUPPORTED_PEFT.search(key):
            raise ConversionError(
                f"{raw}: this PEFT variant (embedding LoRA, DoRA, LoRA bias) is not supported"
            )
        match = _LORA_KEY.match(key)
        if match:
            _add_lora(keymap, raw, match, halves)
            continue
        name = _hf_name(key, keymap.peft)
        if name in keymap.weights:
            raise ConversionError(f"{raw} and {keymap.weights[name]} both normalise to {name}")
        keymap.weights[name] = raw
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise ConversionError(f"{module}: LoRA has lora_{next(iter(pair))} but not its other half")
        keymap.lora[f"{module}.weight"] = LoraPair(module, pair["A"], pair["B"])
    return keymap


def drop_tied_head(keymap: KeyMap, tied: bool, embed: str = "model.embed_tokens.weight") -> str | None:
    """With tied embeddings the output holds the embedding once and no ``lm_head.weight`` (§2.7).

    Returns the dropped head's source key, so the caller can check it really equals the embedding.
    """
    if not tied or "lm_head.weight" not in keymap.weights or embed not in keymap.weights:
        return None
    return keymap.weights.pop("lm_head.weight")


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort ``layers.10`` after ``layers.9`` so each shard holds consecutive layers."""
    return tuple(int(part) if part.isdigit() else part for part in _NUMBER.split(name))


def first(items: Iterable[str], count: int = 5) -> str:
    listed = list(items)
    more = f" (+{len(listed) - count} more)" if len(listed) > count else ""
    return ", ".join(listed[:count]) + more


def vocab_rows_to_trim(
    name: str, shape: tuple[int, ...], expected: Mapping[str, tuple[int, ...]]
) -> int | None:
    """Rows to keep when a vocab-indexed tensor carries padding rows beyond ``config.vocab_size``."""
    want = expected.get(name)
    if want is None or len(shape) != len(want) or not shape or shape[1:] != want[1:]:
        return None
    if name.endswith(("embed_tokens.weight", "lm_head.weight")) and shape[0] > want[0]:
        return want[0]
    return None
