"""FSDP checkpoints (RLinf layout, formats.md §2): DCP and full_weights.pt readers, key handling."""

from __future__ import annotations
