"""How every listener (the main API and the compat front ends on their own ports) logs what clients send:
the access log, and aiohttp's own log of requests it could not parse."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from lightd import keys


def escape(text: object) -> str:
    """`text` as one printable line: control characters, line and paragraph separators and every other
    non-printable character become Python escapes (`\\n`, `\\x1b`, `\\u2028`)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class MaskedAccessLogger(AbstractAccessLogger):
    """Access log lines with every query-string value masked (`?token=` must never reach a log) and
    everything the client chose escaped."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = "&".join(f"{name}=***" for name in request.query) if request.query_string else ""
        target = request.path + (f"?{query}" if query else "")
        # SECURITY: log forging. The path and query keys arrive percent-decoded: `/x%0a<fake line>` put a
        # line of the client's choosing into the log.
        self.logger.info(
            '%s "%s %s" %d %s %.1fms', escape(request.remote), escape(request.method), escape(target),
            response.status, response.body_length, time * 1000,
            extra={"event": "http_request", "request_id": request.get(keys.REQUEST_ID), "method": request.method,
                   "path": target, "status": response.status, "bytes": response.body_length,
                   "duration_ms": round(time * 1000, 3), "remote": request.remote},
        )


class ServerErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log (`aiohttp.server`), given to its request handlers in place of the logger.

    A request aiohttp cannot parse (bad method, bad request line, bad header) is the client's error, not
    the daemon's: it becomes one INFO line (DEBUG when aiohttp chose DEBUG) without a traceback, where
    aiohttp logged a multi-line traceback per request. Every argument is escaped."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        args = tuple(escape(a) if isinstance(a, str) else a for a in args)
        exc = _exception(kwargs.get("exc_info"))
        if isinstance(exc, HttpProcessingError):
            # SECURITY: log forging and log flooding by malformed requests.
            kwargs.pop("exc_info", None)
            kwargs.pop("stack_info", None)
            level = min(level, logging.INFO)
            msg = f"{msg}: %s %s: %s"
            args = (*args, exc.code, type(exc).__name__, escape(exc.message))
        self.logger.log(level, msg, *args, **kwargs)


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    if exc_info:
        return sys.exc_info()[1]
    return None


def server_log_options() -> Mapping[str, Any]:
    """Keyword arguments for an aiohttp server (an AppRunner, or an Application's `handler_args`): the
    masked access log and the one-line log of unparsable requests."""
    return {"access_log_class": MaskedAccessLogger, "logger": ServerErrorLog(logging.getLogger("aiohttp.server"))}
