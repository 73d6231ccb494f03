"""The thin I/O half of detection: collect what :func:`ckptd.detect.classify` needs about one step dir.

Cost is bounded and independent of the checkpoint's size: one ``scandir`` each of the step dir,
``actor/``, ``actor/dcp_checkpoint/``, ``actor/model_state_dict/`` and the ``iter_*`` dir the tracker
names (when present), one read of the tracker, one ``stat`` of ``data/data.pt``, one central-directory
read of ``full_weights.pt`` and, only when the caller does not say, one ``scandir`` of the parent for
later steps. It never recurses into ``mp_rank_*`` dirs, ``hf_checkpoint/`` or ``critic/``.

Errors (the dir vanished, permission denied) propagate as ``OSError``; the scanner skips them.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from ckptd.detect import names

_TRACKER_MAX_BYTES = 64


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns)


@dataclass(frozen=True)
class DcpListing:
    """A torch.distributed.checkpoint dir: ``actor/dcp_checkpoint/`` or, before 2026-01, ``actor/``."""

    rel_dir: str
    metadata: FileStat | None
    metadata_tmp: bool
    distcp_files: int


@dataclass(frozen=True)
class FullWeightsListing:
    rel_path: str
    stat: FileStat
    # torch.save writes the zip central directory at close, so a readable one means "closed once".
    zip_ok: bool


@dataclass(frozen=True)
class MegatronListing:
    tracker_text: str | None  # None: no tracker file yet
    tracker_stat: FileStat | None
    iterations: tuple[int, ...]  # every iter_* dir in actor/
    named_iter_ranks: tuple[str, ...]  # mp_rank_* dirs in the iter_* dir the tracker names
    named_iter_dist: bool  # that dir holds a DCP .metadata (Megatron torch_dist format)


@dataclass(frozen=True)
class StepListing:
    path: Path
    step: int | None
    entries: frozenset[str]  # names directly in the step dir
    actor_entries: frozenset[str] | None  # None: no actor/ dir
    dcp: DcpListing | None
    full_weights: FullWeightsListing | None
    megatron: MegatronListing | None
    data_pt: bool  # data/data.pt exists: the whole step was written (reasoning runner)
    later_sibling: bool  # a global_step_M with M > step exists beside this one


def list_step(step_dir: Path, *, later_sibling: bool | None = None) -> StepListing:
    """Collect the facts about ``step_dir``; pass ``later_sibling`` when the caller already knows it."""
    step = names.parse_step_dir_name(step_dir.name)
    entries = _dir_names(step_dir)
    actor = step_dir / "actor"
    actor_entries = _dir_names(actor) if "actor" in entries else None
    if later_sibling is None:
        later_sibling = step is not None and _has_later_sibling(step_dir.parent, step)
    listing = StepListing(
        path=step_dir,
        step=step,
        entries=entries,
        actor_entries=actor_entries,
        dcp=None,
        full_weights=None,
        megatron=None,
        data_pt="data" in entries and (step_dir / "data" / names.DATA_PT).is_file(),
        later_sibling=later_sibling,
    )
    if actor_entries is None:
        return listing
    return _with_actor(listing, actor, actor_entries)


def _with_actor(listing: StepListing, actor: Path, actor_entries: frozenset[str]) -> StepListing:
    megatron = _list_megatron(actor, actor_entries)
    if megatron is not None:
        return replace(listing, megatron=megatron)
    return replace(
        listing,
        dcp=_list_dcp(actor, actor_entries),
        full_weights=_list_full_weights(actor, actor_entries),
    )


def _list_megatron(actor: Path, actor_entries: frozenset[str]) -> MegatronListing | None:
    iterations = tuple(sorted(i for n in actor_entries if (i := names.parse_iter_dir_name(n)) is not None))
    has_tracker = names.TRACKER_NAME in actor_entries
    if not iterations and not has_tracker:
        return None
    text, stat = _read_tracker(actor / names.TRACKER_NAME) if has_tracker else (None, None)
    named = names.parse_tracker(text) if text is not None else None
    ranks: tuple[str, ...] = ()
    dist = False
    if named is not None and named in iterations:
        iter_entries = _dir_names(actor / names.iter_dir_name(named))
        ranks = tuple(sorted(n for n in iter_entries if names.is_mp_rank_dir_name(n)))
        dist = names.DCP_METADATA in iter_entries
    return MegatronListing(
        tracker_text=text,
        tracker_stat=stat,
        iterations=iterations,
        named_iter_ranks=ranks,
        named_iter_dist=dist,
    )


def _read_tracker(path: Path) -> tuple[str | None, FileStat | None]:
    try:
        with path.open("rb") as fh:
            stat = FileStat.of(os.fstat(fh.fileno()))
            raw = fh.read(_TRACKER_MAX_BYTES)
    except FileNotFoundError:
        return None, None
    return raw.decode("utf-8", errors="replace"), stat


def _list_dcp(actor: Path, actor_entries: frozenset[str]) -> DcpListing | None:
    if names.DCP_DIR in actor_entries:
        return _scan_dcp_dir(actor / names.DCP_DIR, f"actor/{names.DCP_DIR}")
    if names.DCP_METADATA in actor_entries or any(n.endswith(".distcp") for n in actor_entries):
        return _scan_dcp_dir(actor, "actor")
    return None


def _scan_dcp_dir(path: Path, rel_dir: str) -> DcpListing:
    metadata: FileStat | None = None
    tmp = False
    shards = 0
    with os.scandir(path) as it:
        for entry in it:
            if entry.name == names.DCP_METADATA:
                metadata = _entry_stat(entry)
            elif entry.name == names.DCP_METADATA_TMP:
                tmp = True
            elif entry.name.endswith(".distcp"):
                shards += 1
    return DcpListing(rel_dir=rel_dir, metadata=metadata, metadata_tmp=tmp, distcp_files=shards)


def _entry_stat(entry: os.DirEntry[str]) -> FileStat | None:
    try:
        return FileStat.of(entry.stat())
    except FileNotFoundError:
        return None


def _list_full_weights(actor: Path, actor_entries: frozenset[str]) -> FullWeightsListing | None:
    if names.FULL_WEIGHTS_DIR not in actor_entries:
        return None
    folder = actor / names.FULL_WEIGHTS_DIR
    present = _dir_names(folder)
    for name in names.FULL_WEIGHTS_NAMES:
        if name not in present:
            continue
        path = folder / name
        stat = FileStat.of(path.stat())
        return FullWeightsListing(
            rel_path=f"actor/{names.FULL_WEIGHTS_DIR}/{name}", stat=stat, zip_ok=_zip_readable(path)
        )
    return None


def _zip_readable(path: Path) -> bool:
    """True when the zip central directory parses and names a pickle (torch.save's ``*/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    except Exception:  # a half-written zip fails in many ways; all mean "not yet"
        return False


def _has_later_sibling(parent: Path, step: int) -> bool:
    for name in _dir_names(parent):
        other = names.parse_step_dir_name(name)
        if other is not None and other > step:
            return True
    return False


def _dir_names(path: Path) -> frozenset[str]:
    with os.scandir(path) as it:
        return frozenset(entry.name for entry in it)
