"""What a log line is about, and the log's format. Each request gets an id and, on a server's routes, that
server's id, kept in context variables for the request's task (and the tasks it starts: a start's console
reader logs with the request that started it). `log_format: "json"` writes one JSON object per line with
those fields and the line's `event` (an `extra={"event": ...}` name, or the message's template: a stable key
to group lines by, whatever their arguments)."""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from lightd import keys
from lightd.timestamps import rfc3339

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("lightd_request_id", default=None)
SERVER: contextvars.ContextVar[str | None] = contextvars.ContextVar("lightd_server", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXTRA_FIELDS = ("method", "path", "status", "bytes", "duration_ms", "remote")
"""Fields a log call may add with `extra=` that the JSON line carries (the access log's)."""


def new_request_id() -> str:
    """12 random hex digits (os.urandom: a quarter of uuid4's cost, on every request)."""
    return os.urandom(6).hex()


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the request (an id, and the server of a `/containers/{container_id}` route) for every log line
    it causes; the error bodies' `request_id` is the same id."""
    rid = new_request_id()
    request[keys.REQUEST_ID] = rid
    REQUEST_ID.set(rid)
    SERVER.set(request.match_info.get("container_id"))
    return await handler(request)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, server, event (and extras)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
            "server": getattr(record, "server", None) or SERVER.get(),
            "event": getattr(record, "event", None) or (record.msg if isinstance(record.msg, str) else None),
        }
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # One line whatever the message holds: JSON escapes every newline and control character.
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, log_format: str) -> None:
    """The root logger: `log_format` "json" (JsonFormatter) or "text", on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
