"""The only routes served without the node token. Anything not registered here is authenticated by
`auth_middleware`. Self-authenticating routes (the console WebSocket takes `?token=` because browsers
cannot set headers; the signed one-shot URL routes of api/signed_urls.py — `GET /download/file`,
`POST /upload/file`, `GET /download/backup` — take a signed `?token=`) are registered here too, through
`@self_authenticated`, and check the token themselves."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar

from aiohttp import web

from lightd import __version__
from lightd.api.query import accepts_query
from lightd.api.route_docs import View, documented
from lightd.cors import is_preflight
from lightd.http import json_response
from lightd.timestamps import rfc3339

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
_PUBLIC_HANDLERS: set[object] = set()


def self_authenticated(handler: H) -> H:
    """Mark a handler that checks its own credentials (the middleware lets it through)."""
    _PUBLIC_HANDLERS.add(handler)
    return handler


def is_public_handler(handler: object) -> bool:
    return handler in _PUBLIC_HANDLERS


def is_public(request: web.Request) -> bool:
    # A CORS preflight carries no token: lightd.cors answers it (a mounted front end's, inside this check).
    return request.match_info.handler in _PUBLIC_HANDLERS or (
        request.match_info.http_exception is not None
    ) or is_preflight(request)


routes = web.RouteTableDef()


class Pong(View):
    status: Literal["ok"]
    version: str
    """lightd's version."""
    time: datetime
    """The node's clock."""


@routes.get("/api/v1/public/ping")
@self_authenticated
@accepts_query(None)
@documented(response=Pong)
async def ping(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__, "time": rfc3339(time.time())})
