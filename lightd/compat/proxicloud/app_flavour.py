"""What distinguishes the two flavours of the ProxiCloud front end on an application: its routes, its error
body and its `X-Cache-Status` header. `doc` is the seed document's API (routes.py); `app` the one the real
Next.js web app calls (app_routes.py, app_volumes.py, app_projects.py): errors `{"error": msg}`, and
`X-Cache-Status: MISS` on live answers, as its Go backend sends them (its frontend shows "offline" on `HIT`)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from lightd.compat.proxicloud import app_projects, app_routes, app_volumes
from lightd.compat.proxicloud.node import NODE
from lightd.errors import DockerUnavailable
from lightd.http_errors import ErrorAnswer, ErrorShape, Failure, Origin

ENGINE_DOWN = "Docker engine unreachable"


@dataclass(frozen=True)
class Flavour:
    error_body: ErrorShape
    header: Middleware  # sets X-Cache-Status (and starts the analytics collector on first use)
    routes: tuple[web.RouteTableDef, ...]
    records: bool  # its applications carry the web app's record store (RECORDS)


def app_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """`{"error": msg}` with lightd's status for the error (503 with the engine away); an unhandled error
    a 500 naming its request id."""
    if failure.origin is Origin.UNHANDLED:
        return ErrorAnswer({"error": f"internal server error (request {failure.request_id})"})
    if isinstance(failure.error, DockerUnavailable):
        return ErrorAnswer({"error": ENGINE_DOWN}, status=503)
    return ErrorAnswer({"error": failure.error.message})


@web.middleware
async def cache_miss(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Live answers carry `X-Cache-Status: MISS`; the first request starts the analytics collector."""
    request.app[NODE].start_collecting()  # in use: from now on analytics are sampled
    response = await handler(request)
    response.headers.setdefault("X-Cache-Status", "MISS")
    return response


APP = Flavour(app_error_body, cache_miss, (app_routes.routes, app_volumes.routes, app_projects.routes), records=True)
