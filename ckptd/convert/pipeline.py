"""One conversion, start to publish. Used by ``ckptd convert`` and by the daemon's workers."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from ckptd.convert import hfdir
from ckptd.convert.api import ConvertHooks, ConvertRequest, ConvertResult
from ckptd.convert.registry import detect
from ckptd.errors import OutputExistsError
from ckptd.verify.checks import verify_output
from ckptd.verify.manifest import build_manifest, write_manifest
from ckptd.verify.publish import check_output_location, prepare_staging, publish_dir, staging_lock

log = structlog.get_logger("ckptd.convert")


class DirectHooks:
    """Hooks for a caller that owns the output outright (the CLI): publish is a plain atomic rename."""

    def __init__(self, *, replace: bool = False) -> None:
        self.replace = replace

    def progress(self, done_bytes: int, total_bytes: int) -> None:
        return None

    def check_alive(self) -> None:
        return None

    def publish(self, staging: Path, final: Path) -> None:
        publish_dir(staging, final, replace=self.replace)


def convert_checkpoint(request: ConvertRequest, hooks: ConvertHooks | None = None) -> ConvertResult:
    hooks = hooks or DirectHooks(replace=request.force)
    started = time.monotonic()
    output = request.output.absolute()
    check_output_location(output)
    if output.exists() and not request.force:
        raise OutputExistsError(f"{output}: already exists; pass --force to replace it")
    converter, source = detect(request.source)
    log.info("convert.started", source=str(source.checkpoint_dir), format=source.format, output=str(output))
    with staging_lock(output):
        staging = prepare_staging(output)
        report = converter.write_weights(source, request, staging, hooks)
        weights_done = time.monotonic()
        copied = hfdir.copy_assets(report.base_model_dir, staging) if report.base_model_dir else []
        hfdir.write_config(staging, report.base_config, report.dtype)
        hfdir.ensure_generation_config(staging)
        verified = verify_output(staging, report.expected_shapes)
        timings = {
            "weights": weights_done - started,
            "assets_and_verify": time.monotonic() - weights_done,
        }
        manifest = build_manifest(source, report, verified, timings, copied)
        write_manifest(staging, manifest)
        hooks.check_alive()
        hooks.publish(staging, output)
    seconds = time.monotonic() - started
    log.info("convert.published", output=str(output), tensors=verified.tensors, seconds=round(seconds, 3))
    return ConvertResult(
        output=output,
        format=source.format,
        reader=report.reader,
        step=source.step,
        tensors=verified.tensors,
        bytes_written=sum(s.file_bytes for s in report.shards),
        seconds=seconds,
        manifest=manifest,
    )
