"""Checkpoint conversion: format readers, shared sharded writer, HF output assembly."""

from __future__ import annotations
