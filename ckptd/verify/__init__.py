"""Checks on an output dir before it is published, the manifest, and the atomic publish."""

from __future__ import annotations
