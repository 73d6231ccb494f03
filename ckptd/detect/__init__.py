"""Checkpoint detection: a thin lister (:func:`list_step`) and a pure classifier (:func:`classify`).

Typical use (what :class:`ckptd.watch.Scanner` does)::

    listing = list_step(step_dir)
    result = classify(listing, previous, now, settle_seconds)
    previous = observe(listing, previous, now)
"""

from __future__ import annotations

from ckptd.detect.classify import (
    NOTHING_TO_SETTLE,
    Classification,
    Complete,
    Format,
    Incomplete,
    NotACheckpoint,
    Observation,
    classify,
    observe,
    signature,
)
from ckptd.detect.listing import (
    DcpListing,
    FileStat,
    FullWeightsListing,
    MegatronListing,
    StepListing,
    list_step,
)
from ckptd.detect.names import parse_step_dir_name

__all__ = [
    "NOTHING_TO_SETTLE",
    "Classification",
    "Complete",
    "DcpListing",
    "FileStat",
    "Format",
    "FullWeightsListing",
    "Incomplete",
    "MegatronListing",
    "NotACheckpoint",
    "Observation",
    "StepListing",
    "classify",
    "list_step",
    "observe",
    "parse_step_dir_name",
    "signature",
]
