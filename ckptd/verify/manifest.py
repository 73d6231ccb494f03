"""``ckptd.json``: what was converted, how, and the hash of every shard."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ckptd import __version__
from ckptd.convert.api import SourceInfo, WeightsReport
from ckptd.verify.checks import VerifiedOutput

MANIFEST_NAME = "ckptd.json"


def build_manifest(
    source: SourceInfo,
    report: WeightsReport,
    verified: VerifiedOutput,
    timings: dict[str, float],
    copied_assets: list[str],
) -> dict[str, Any]:
    return {
        "ckptd_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(source.checkpoint_dir),
        "step": source.step,
        "format": source.format,
        "reader": report.reader,
        "model_type": report.base_config.get("model_type"),
        "base_model": str(report.base_model_dir) if report.base_model_dir else None,
        "dtype": report.dtype,
        "dtype_counts": verified.dtypes,
        "parallel_layout": report.layout,
        "tensor_count": verified.tensors,
        "tensor_bytes": verified.tensor_bytes,
        "bytes_read": report.bytes_read,
        "shards": [
            {"file": s.filename, "sha256": s.sha256, "bytes": s.file_bytes, "tensors": len(s.tensors)}
            for s in report.shards
        ],
        "adapter": str(report.adapter_dir.name) if report.adapter_dir else None,
        "assets_copied": copied_assets,
        "warnings": report.warnings,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "source_details": {k: v for k, v in asdict(source).items() if k == "details"}["details"],
        "extra": report.extra,
    }


def write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(output: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((output / MANIFEST_NAME).read_text())
    return data
