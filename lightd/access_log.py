"""The access log of every listener (the main API and the compat front ends on their own ports)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class MaskedAccessLogger(AbstractAccessLogger):
    """Access log lines with every query-string value masked: `?token=` must never reach a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = "&".join(f"{name}=***" for name in request.query) if request.query_string else ""
        target = request.path + (f"?{query}" if query else "")
        self.logger.info(
            '%s "%s %s" %d %s %.1fms', request.remote, request.method, target, response.status,
            response.body_length, time * 1000,
        )
