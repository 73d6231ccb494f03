"""The pure half of detection: decide from a :class:`StepListing` whether a step is safe to convert.

Rules (formats.md §1.3; pitfalls 12 and 14):

- Megatron: complete when ``actor/latest_checkpointed_iteration.txt`` (written by rank 0 after the
  global barrier) holds a decimal iteration whose ``iter_<N:07d>`` dir exists and has ``mp_rank_*``
  dirs (or a DCP ``.metadata``: the torch_dist format). ``release`` is a converted HF->MG checkpoint,
  never a training step.
- FSDP: the DCP ``.metadata`` appears by atomic rename, so it proves the sharded part, and the converter
  reads the DCP whenever it is there: such a step is complete at once, whatever state ``full_weights.pt``
  is in. Without a DCP, ``full_weights.pt`` (a plain, non-atomic ``torch.save``) must open as a zip and
  keep its size and mtime for ``settle_seconds`` of our own clock (two observations) unless a later
  ``global_step_*`` or ``data/data.pt`` exists, which the trainer only writes once the step is finished.
- ``critic/`` alone is a value head, not a language model.

The fingerprint names the file whose atomic appearance made the step complete (the tracker, the DCP
``.metadata``, or ``full_weights.pt`` when there is no DCP), with its size and mtime: it changes only
when the trainer rewrites the checkpoint, not when ``full_weights.pt`` shows up beside a finished DCP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ckptd.detect import names
from ckptd.detect.listing import FileStat, FullWeightsListing, MegatronListing, StepListing

Format = Literal["fsdp", "megatron"]


@dataclass(frozen=True)
class Observation:
    """What the files still settling looked like, and since when (caller's clock) they look like that."""

    signature: str
    since: float


@dataclass(frozen=True)
class Complete:
    format: Format
    step: int
    fingerprint: str
    reason: str
    layout: str  # "dcp", "full_weights", "legacy" or "torch_dist"
    marker: str  # path relative to the step dir of the file the fingerprint describes
    marker_stat: FileStat
    iteration: int | None = None  # Megatron only


@dataclass(frozen=True)
class Incomplete:
    reason: str


@dataclass(frozen=True)
class NotACheckpoint:
    reason: str


Classification = Complete | Incomplete | NotACheckpoint


# signature() of a step with neither a DCP .metadata nor full_weights.pt: nothing is settling.
NOTHING_TO_SETTLE = "dcp=none;fw=none"


def signature(listing: StepListing) -> str:
    """Identity of the files whose settling :func:`classify` waits for."""
    dcp = listing.dcp.metadata if listing.dcp is not None else None
    fw = listing.full_weights
    fw_part = f"{fw.rel_path}={fw.stat.size}:{fw.stat.mtime_ns}:{int(fw.zip_ok)}" if fw else "fw=none"
    dcp_part = f"dcp={dcp.size}:{dcp.mtime_ns}" if dcp else "dcp=none"
    return f"{dcp_part};{fw_part}"


def observe(listing: StepListing, previous: Observation | None, now: float) -> Observation:
    """The observation to keep for the next call: ``previous`` while nothing changed."""
    sig = signature(listing)
    if previous is not None and previous.signature == sig:
        return previous
    return Observation(signature=sig, since=now)


def classify(
    listing: StepListing, previous: Observation | None, now: float, settle_seconds: float
) -> Classification:
    if listing.step is None:
        return NotACheckpoint(f"{listing.path.name!r} is not named global_step_<int>")
    if listing.actor_entries is None:
        if "critic" in listing.entries:
            return NotACheckpoint("only critic/ (a value head), which is not LM-convertible")
        return _unfinished(listing, "waiting for actor/")
    if listing.megatron is not None:
        return _classify_megatron(listing.step, listing.megatron)
    return _classify_fsdp(listing, listing.step, previous, now, settle_seconds)


def _unfinished(listing: StepListing, reason: str) -> Incomplete | NotACheckpoint:
    """Nothing recognisable yet: still being written, unless a later step shows the trainer moved on."""
    if listing.later_sibling or listing.data_pt:
        return NotACheckpoint(f"{reason}, but the trainer has moved on: no convertible actor checkpoint")
    return Incomplete(reason)


def _classify_megatron(step: int, mg: MegatronListing) -> Classification:
    if mg.tracker_text is None or mg.tracker_stat is None:
        return Incomplete(f"waiting for {names.TRACKER_NAME}")
    text = mg.tracker_text.strip()
    if text == "release":
        return NotACheckpoint(f"{names.TRACKER_NAME} says 'release': converted weights, not a training step")
    iteration = names.parse_tracker(text)
    if iteration is None:
        shown = text[:20] or "empty"
        return Incomplete(f"{names.TRACKER_NAME} content {shown!r} is not an iteration (being written?)")
    iter_name = names.iter_dir_name(iteration)
    if iteration not in mg.iterations:
        have = ", ".join(names.iter_dir_name(i) for i in mg.iterations) or "none"
        return Incomplete(f"{names.TRACKER_NAME} names {iter_name}, which is missing (have: {have})")
    if mg.named_iter_ranks:
        layout, found = "legacy", f"{len(mg.named_iter_ranks)} mp_rank_* dirs"
    elif mg.named_iter_dist:
        layout, found = "torch_dist", "a torch_dist .metadata"
    else:
        return Incomplete(f"{iter_name} has no mp_rank_* dirs")
    stat = mg.tracker_stat
    return Complete(
        format="megatron",
        step=step,
        fingerprint=f"megatron:iter={iteration}:tracker={stat.size}:{stat.mtime_ns}",
        reason=f"{names.TRACKER_NAME} names {iter_name} with {found}",
        layout=layout,
        marker=f"actor/{names.TRACKER_NAME}",
        marker_stat=stat,
        iteration=iteration,
    )


def _classify_fsdp(
    listing: StepListing, step: int, previous: Observation | None, now: float, settle_seconds: float
) -> Classification:
    dcp, fw = listing.dcp, listing.full_weights
    if dcp is not None and dcp.metadata is None:
        tmp = f", {names.DCP_METADATA_TMP} present" if dcp.metadata_tmp else ""
        found = f"{dcp.distcp_files} .distcp so far{tmp}"
        return _unfinished(listing, f"waiting for {dcp.rel_dir}/{names.DCP_METADATA} ({found})")
    if dcp is not None and dcp.metadata is not None:
        marker = f"{dcp.rel_dir}/{names.DCP_METADATA}"
        return _complete(step, dcp.metadata, marker, "dcp", f"{marker} present (atomic; the DCP is read)")
    if fw is None:
        return _unfinished(listing, "actor/ has no dcp_checkpoint/.metadata, full_weights.pt or tracker")
    finished = listing.later_sibling or listing.data_pt
    wait = None if finished else _full_weights_wait(listing, fw, previous, now, settle_seconds)
    if wait is not None:
        return Incomplete(wait)
    if not fw.zip_ok:
        return Incomplete("full_weights.pt is not a readable zip although the trainer moved on (corrupt?)")
    why = "a later step or data/data.pt exists" if finished else "settled"
    return _complete(step, fw.stat, fw.rel_path, "full_weights", f"{fw.rel_path} present; {why}")


def _complete(step: int, stat: FileStat, marker: str, layout: str, reason: str) -> Complete:
    return Complete(
        format="fsdp",
        step=step,
        fingerprint=f"fsdp:{layout}:{stat.size}:{stat.mtime_ns}",
        reason=reason,
        layout=layout,
        marker=marker,
        marker_stat=stat,
    )


def _full_weights_wait(
    listing: StepListing,
    fw: FullWeightsListing | None,
    previous: Observation | None,
    now: float,
    settle_seconds: float,
) -> str | None:
    """Why the step must wait for ``full_weights.pt`` (or its possible start), or None to go ahead."""
    if fw is None:
        what = "DCP done, no full_weights.pt yet"
        first = f"{what}; waiting {settle_seconds:g}s in case rank 0 starts it"
    else:
        what = fw.rel_path.rsplit("/", 1)[-1]
        if not fw.zip_ok:
            return f"{what} is not a readable zip yet (still being written)"
        first = f"{what} first seen; waiting {settle_seconds:g}s for its size to settle"
    if settle_seconds <= 0:
        return None
    if previous is None or not _seen_before(previous, fw):
        return first
    if previous.signature != signature(listing):
        return f"{what}: size still changing" if fw is not None else f"{what}: files changed, settling again"
    held = now - previous.since
    if held < settle_seconds:
        return f"{what}: unchanged for {held:.1f}s of the {settle_seconds:g}s settle window"
    return None


def _seen_before(previous: Observation, fw: FullWeightsListing | None) -> bool:
    """Whether the previous observation already had this file (else it just appeared)."""
    if fw is not None:
        return f"{fw.rel_path}=" in previous.signature
    return not previous.signature.startswith("dcp=none")
