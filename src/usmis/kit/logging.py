"""Structured logging (structlog).  Log opaque keys and counts, never names, IINs or phones."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", json: bool = False) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    # Migrations narrate every plugin at INFO; only their warnings are news.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_CurrentStderrLogger,
        cache_logger_on_first_use=False,
    )


class _CurrentStderrLogger:
    """Writes to whatever ``sys.stderr`` is *now* (test runners and servers swap it)."""

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
