"""Worker processes: claim a job, keep its lease, convert, publish fenced, report."""

from __future__ import annotations
