"""structlog, configured once at start-up: JSON lines in production, readable in a terminal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["RepeatedLines", "WithheldRequestBytes", "configure_logging"]


class WithheldRequestBytes(logging.Filter):
    """The HTTP server's report of a request it could not parse quotes the request's bytes
    (the first 100 of an over-long header: a token, say). Such reports keep their message
    and lose the quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__module__ == "aiohttp.http_exceptions":
            record.exc_info = None
            record.msg = f"{record.msg} ({type(error).__name__}; the request is not quoted)"
        return True


class RepeatedLines(logging.Filter):
    """A library's line that repeats is written once per ``interval``, the next one saying
    how many like it were held back (``held_back``): while Kafka is away aiokafka says the
    same thing thousands of times a minute, and the one line that matters drowns.

    aiokafka's "Group Coordinator Request failed ... GroupCoordinatorNotAvailableError" is
    what every consumer hears while its group's coordinator starts: a warning, not an
    error (repeated, it is aggregated like any other)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "GroupCoordinatorNotAvailable" in _text(record):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        since, held = self._seen.get(key, (None, 0))
        if since is not None and now - since < self._interval:
            self._seen[key] = (since, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.held_back = held
        return True


def _text(record: logging.LogRecord) -> str:
    """The record's message with its arguments (aiokafka names the error in one)."""
    try:
        return record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the template
        return str(record.msg)


def _held_back(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    held = getattr(event.get("_record"), "held_back", None)
    if held:
        event["held_back"] = held
    return event


def configure_logging(
    service: str,
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "INFO",
    repeat_seconds: float = 60.0,
) -> None:
    """Configure structlog and the standard library's logging for one process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared_processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (aiokafka, aiohttp) log through the standard library: keep their warnings
    # only, rendered like ours, so that every line of a service is one JSON object.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name, _held_back],
        )
    )
    handler.addFilter(WithheldRequestBytes())
    handler.addFilter(RepeatedLines(interval=repeat_seconds))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
