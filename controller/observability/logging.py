"""Structured JSON logs, one object per line, each carrying the correlation id of its work.

A correlation id (a decision id, a CloudEvent id, or a request id) is bound
to the current asyncio task with `correlation(...)`; every log record made
inside — by any module, with plain `logging` calls — carries it, so one
alert's path through HTTP, the pipeline and delivery can be found with one
grep. When tracing is on, each line also carries the `trace_id` and `span_id` of the
current span. A ContextVar is used because the id must cross call chains we do not
own (FastAPI, the pipeline's workers), and asyncio copies it into tasks.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

_correlation_id: ContextVar[str | None] = ContextVar("trm_sre_correlation_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
# (`color_message` is uvicorn's ANSI-coloured copy of the message: noise in JSON.)
_RECORD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    """Bind `correlation_id` to log records made inside the block (and in tasks it starts)."""
    token = _correlation_id.set(correlation_id)
    try:
        yield
    finally:
        _correlation_id.reset(token)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "correlation_id", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", None) or _correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        # The current span's ids (OpenTelemetry's context crosses tasks and threads like ours); none when off.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
            entry["span_id"] = trace.format_span_id(span_context.span_id)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger (ours, uvicorn's, kopf's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn installs its own handlers unless told not to; make its records propagate to ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Libraries that are chatty at INFO about every request.
    for name in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
