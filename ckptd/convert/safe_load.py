"""``torch.load`` with ``weights_only=True`` and an explicit allowlist (formats.md §3.2).

Trainer checkpoints pickle their launch arguments (an ``argparse.Namespace`` or an OmegaConf
``DictConfig``), Megatron enums, rerun-state objects and numpy RNG state next to the weights. None of
that code is imported: every such class is replaced by an inert :class:`Stub` that only records what
the pickle gave it, and :func:`plain` turns a tree of stubs back into dicts, lists and scalars.
Any global outside the allowlist is refused, naming the global and the file.
"""

from __future__ import annotations

import _codecs
import collections
import threading
import typing
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckptd.errors import ConversionError, UnsafePickleError

# Classes whose instances only carry data; any global from these modules becomes a Stub.
STUB_PREFIXES = ("megatron.core.", "omegaconf.")
STUB_NAMES = frozenset(
    {
        "argparse.Namespace",
        "types.SimpleNamespace",
        "pathlib.PosixPath",
        "pathlib.Path",
        "signal.Signals",
        "io.BytesIO",
        "_io.BytesIO",
    }
)
# Real objects that are harmless to reference or call with pickled arguments.
_REAL: dict[str, Any] = {
    "typing.Any": typing.Any,
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "builtins.tuple": tuple,
    "builtins.set": set,
    "collections.defaultdict": collections.defaultdict,
    "_codecs.encode": _codecs.encode,
    "numpy._core.multiarray._reconstruct": np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    "numpy.core.multiarray._reconstruct": np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "numpy.dtypes.UInt32DType": np.dtypes.UInt32DType,
}


class Stub:
    """An inert stand-in: accepts any constructor arguments and pickled state, runs no code."""

    ckptd_global: typing.ClassVar[str] = ""

    def __new__(cls, *args: Any, **_kwargs: Any) -> Stub:
        inst = super().__new__(cls)
        inst.__dict__["_stub_args"] = args
        return inst

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_stub_state"] = state

    def __repr__(self) -> str:
        return f"<stub {self.ckptd_global} {self.__dict__.get('_stub_args', ())!r}>"


_STUB_CLASSES: dict[str, type[Stub]] = {}
# torch.serialization.safe_globals swaps process-wide state on enter/exit: concurrent loads from
# several threads would see each other's allowlists vanish. Loads are mmapped, so this lock is cheap.
_LOAD_LOCK = threading.Lock()


def stub_class(full_name: str) -> type[Stub]:
    if full_name not in _STUB_CLASSES:
        module, _, name = full_name.rpartition(".")
        attrs = {"ckptd_global": full_name, "__module__": f"ckptd.stub.{module}"}
        _STUB_CLASSES[full_name] = type(name, (Stub,), attrs)
    return _STUB_CLASSES[full_name]


def is_stubbable(full_name: str) -> bool:
    return full_name in STUB_NAMES or full_name.startswith(STUB_PREFIXES)


def allowlist_for(globals_found: list[str], path: Path) -> list[Any]:
    """``safe_globals`` entries for the globals a file names; refuses anything not allowlisted."""
    # Needed at BUILD time of numpy RNG state but never listed by the scan (formats.md §3.2).
    entries: list[Any] = [np.dtypes.UInt32DType, np.dtypes.Int64DType, np.dtypes.Float64DType]
    for full_name in globals_found:
        if full_name in _REAL:
            entries.append((_REAL[full_name], full_name))
        elif is_stubbable(full_name):
            entries.append((stub_class(full_name), full_name))
        else:
            raise UnsafePickleError(
                f"{path}: refusing to unpickle global {full_name!r} (not on ckptd's allowlist of "
                "Megatron/OmegaConf/argparse/numpy names); the file may be malicious or from an "
                "unsupported trainer"
            )
    return entries


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, OSError, zipfile.BadZipFile, EOFError, ValueError, KeyError) as exc:
        raise ConversionError(f"{path}: corrupt or truncated torch file ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def safe_load(path: Path, *, mmap: bool = True) -> Any:
    """Load a torch.save file on CPU with weights_only=True; tensors stay mmapped when ``mmap``."""
    if not path.is_file():
        raise ConversionError(f"{path}: not found")
    found = _unsafe_globals(path)
    with _LOAD_LOCK:
        entries = allowlist_for(found, path)
        try:
            with torch.serialization.safe_globals(entries):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:  # torch raises many types for bad files
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise UnsafePickleError(
                    f"{path}: refused by the weights_only loader ({_short(exc)})"
                ) from None
            raise ConversionError(f"{path}: corrupt or unreadable torch file ({_short(exc)})") from None


def _plain_stub(obj: Stub, convert: Callable[[Any], Any]) -> Any:
    state = obj.__dict__.get("_stub_state")
    args = obj.__dict__.get("_stub_args", ())
    if isinstance(state, dict) and "_content" in state:  # OmegaConf container
        return convert(state["_content"])
    if isinstance(state, dict) and "_val" in state:  # OmegaConf value node
        return convert(state["_val"])
    if isinstance(state, dict):  # Namespace, dataclass-like objects
        return {key: convert(value) for key, value in state.items()}
    if state is None and len(args) == 1:  # enums pickle as Cls(value)
        return convert(args[0])
    return repr(obj)


def plain(obj: Any) -> Any:
    """Turn stubs (OmegaConf nodes, Namespace, enums) into plain dicts, lists and scalars."""
    if isinstance(obj, Stub):
        return _plain_stub(obj, plain)
    if isinstance(obj, dict):
        return {key: plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(value) for value in obj]
    return obj
