"""structlog set-up: JSON lines when not on a terminal (journald, files, pipes), a readable
console otherwise; every event passes through ``redact`` so no key can reach a log."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from mimo_watchd.config import redact

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def _redact_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) for k, v in event.items()}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configures structlog once for the process; ``fmt`` is auto, json or console."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    renderer: Any = (structlog.processors.JSONRenderer(ensure_ascii=False) if as_json
                     else structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
