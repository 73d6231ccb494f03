"""Which filesystem events can make a checkpoint complete or appear (pure; used by the observer)."""

from __future__ import annotations

import posixpath

from ckptd.detect import names
from ckptd.watch.discover import CHECKPOINTS_DIR

# Files whose close or rename-into-place can complete a step (formats.md §1.3).
MARKER_FILES = frozenset({names.DCP_METADATA, names.TRACKER_NAME, names.DATA_PT, *names.FULL_WEIGHTS_NAMES})


def is_relevant(kind: str, is_directory: bool, src_path: str, dest_path: str = "") -> bool:
    """``kind`` is watchdog's event_type: created, closed, moved, modified, deleted, opened, ..."""
    if kind not in {"created", "closed", "moved"}:
        return False
    path = dest_path if kind == "moved" and dest_path else src_path
    name = posixpath.basename(path.rstrip("/"))
    if is_directory:
        # A moved-in dir may be a whole experiment under any name.
        return kind == "moved" or name == CHECKPOINTS_DIR or names.parse_step_dir_name(name) is not None
    return name in MARKER_FILES
