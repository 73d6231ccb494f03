"""The one structlog configuration. Call ``configure_logging`` once per process (workers too).

Event names are stable and dotted (``checkpoint.detected``, ``job.enqueued``, ``job.claimed``,
``job.done``, ``job.failed``, ...): operators grep and alert on them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info", fmt: str = "auto", *, stream: TextIO | None = None, **bound: Any
) -> None:
    """JSON lines when the stream is not a TTY (or fmt="json"), a readable console format otherwise."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(pid=os.getpid(), **bound)
    # Quiet third-party stdlib loggers (transformers, torch) unless debugging.
    logging.basicConfig(level=logging.WARNING if level != "debug" else logging.DEBUG, stream=stream)
    for noisy in ("transformers", "torch", "watchdog", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    # We read DCP checkpoints without a process group on purpose (formats.md §2.3).
    warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
