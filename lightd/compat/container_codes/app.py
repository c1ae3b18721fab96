"""Container Codes compatibility front end (`codyaverett/container-codes`, seed `container-codes-api.md`):
ContainerCodes(services), built once per daemon (its store, file area, job runner and proxy, and their
lifetime), whose create_app() serves it with this error shape and its authentication on its own port.

Served on the main port under `/compat/container-codes` (node token, checked by the main app) and, when
`compat.container_codes.enabled`, on its own port (default 127.0.0.1:8090) where every request needs a
token as the seed says: `Authorization: Bearer <token>` or `X-API-Key: <token>` (lightd's node token or a
temporary token), and `?token=` on `/api/ws/updates` (browsers cannot set headers on a WebSocket). With
`require_token` set, lightd.compat.serving's own check (the node token, in any of those three) runs first.

Errors are the seed's `{"error": {"code", "message", "details", "request_id"}}`, with the same request id
in `X-Request-Id` (a client's own `X-Request-Id` is echoed when it is sane): INVALID_REQUEST 400 (also
INVALID_PATH for a refused file path), UNAUTHORIZED 401, FORBIDDEN 403, CONTAINER_NOT_FOUND /
JOB_NOT_FOUND / FILE_NOT_FOUND / UPSTREAM_NOT_FOUND / ROUTE_NOT_FOUND / NOT_FOUND 404, CONFLICT 409,
PAYLOAD_TOO_LARGE 413, BAD_GATEWAY 502 (proxy), SERVICE_UNAVAILABLE 503 (also the Docker engine down),
INTERNAL_ERROR 500 (logged, no traceback in the body).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from lightd import keys
from lightd.compat.base import CompatServices
from lightd.compat.container_codes import containers, proxy_routes, routes
from lightd.compat.container_codes.filearea import FileArea
from lightd.compat.container_codes.jobs import JOB_RUNNER, JobRunner
from lightd.compat.container_codes.proxy import PROXY, ProxyService
from lightd.compat.container_codes.routes import FILE_AREA
from lightd.compat.container_codes.store import STORE, ContainerCodesStore
from lightd.compat.container_codes.updates import UPDATES, UpdateSockets
from lightd.errors import LightdError, NotFound, PathNotAllowed
from lightd.http import bearer_token
from lightd.http_errors import ErrorAnswer, Failure, Origin, error_middleware

REQUEST_ID = web.RequestKey("container_codes_request_id", str)
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
BODY_SLACK = 1024 * 1024
"""Room for multipart framing around the largest file write."""
HTTP_CODES = {400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 416: "RANGE_NOT_SATISFIABLE", 429: "RATE_LIMITED",
              500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE"}
NOT_FOUND_CODES = {"container": "CONTAINER_NOT_FOUND", "job": "JOB_NOT_FOUND", "file": "FILE_NOT_FOUND",
                   "upstream": "UPSTREAM_NOT_FOUND", "route": "ROUTE_NOT_FOUND"}


def request_id(request: web.Request) -> str:
    """This request's id: the client's own `X-Request-Id` when it is sane, else a new one (made once)."""
    if REQUEST_ID not in request:
        client_id = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID] = client_id if CLIENT_REQUEST_ID.match(client_id) else f"req_{secrets.token_hex(6)}"
    return request[REQUEST_ID]


def _code(request: web.Request, exc: LightdError) -> str:
    if isinstance(exc, PathNotAllowed):
        return "INVALID_PATH"
    if isinstance(exc, NotFound):
        if isinstance(exc.details, dict) and "output_file" in exc.details:
            return "NOT_FOUND"  # a job's output file: the job exists, the seed's generic code
        route_name = request.match_info.route.name or ""
        return NOT_FOUND_CODES.get(route_name.split("_", 1)[0], "NOT_FOUND")
    return HTTP_CODES.get(exc.status, "INTERNAL_ERROR" if exc.status >= 500 else "INVALID_REQUEST")


def seed_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """The lightd error tree (and aiohttp's HTTP errors) in the seed's `{"error": {"code", ...}}` shape,
    with the request id in `X-Request-Id`."""
    error, status, details = failure.error, failure.status, None
    if failure.origin is Origin.UNHANDLED:
        code, message = "INTERNAL_ERROR", "Internal server error"
    elif failure.origin is Origin.HTTP:
        code = HTTP_CODES.get(status, "INVALID_REQUEST")
        message = error.message if status == 413 else failure.reason
    elif status == 404 and request.match_info.route.name == "container_get":
        known = sorted(s.id for s in request.config_dict[keys.COMPAT].servers)[:20]
        details = {"container_id": request.match_info.get("id"), "available_containers": known}
        code, message = "CONTAINER_NOT_FOUND", f"Container with ID '{request.match_info.get('id')}' not found"
    else:
        code, message, details = _code(request, error), error.message, error.details
    body = {"error": {"code": code, "message": message, "details": details, "request_id": failure.request_id}}
    return ErrorAnswer(body, headers={"X-Request-Id": failure.request_id})


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer carries its request id — also one a handler streams itself (file
    downloads, 200 and 206, job output files), which a middleware would see only once sent. Errors have
    theirs from seed_error_body."""
    response.headers.setdefault("X-Request-Id", request_id(request))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On its own port, every request carries a token (Bearer or X-API-Key; `?token=` on the socket).
    Mounted on the main port, the main app has already checked the node token."""
    if len(request.match_info.apps) > 1:
        return await handler(request)
    websocket = request.match_info.route.name == "updates"
    token = bearer_token(request) or request.headers.get("X-API-Key") or (request.query.get("token") if websocket else None)
    services: CompatServices = request.config_dict[keys.COMPAT]
    await services.tokens.authenticate(token, purpose="websocket" if websocket else "api", container=None)
    return await handler(request)


async def updates_socket(request: web.Request) -> web.StreamResponse:
    return await request.config_dict[UPDATES].serve(request)


async def _close_updates(app: web.Application) -> None:
    # on_shutdown: the update sockets this application accepted, before the daemon's services close.
    await app[UPDATES].close()


class ContainerCodes:
    """The Container Codes front end of one daemon: whichever application a request arrives on (mounted
    or on its own port), the same store, file area, job runner and proxy answer it."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        # Its own tables, on the daemon's connection, made on the first write.
        self.store = ContainerCodesStore(lambda: services.store)
        # The file area's volume is made on first use: a daemon whose Container Codes files are never used
        # shows no volume of it in GET /volumes.
        self.files = FileArea(services, self.store)
        self.jobs = JobRunner(services, self.files, self.store)
        self.proxy = ProxyService(services, self.store)
        # The config is on the main app from its creation, before any front end is built.
        self.body_limit = services.config.volumes.max_write_bytes + BODY_SLACK

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The job runner and the proxy's session, from after the daemon's services start to before they
        close; each is closed even if the other's close fails."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.jobs.close)
            await self.jobs.start()
            stack.push_async_callback(self.proxy.close)
            await self.proxy.start()
            yield

    def create_app(self) -> web.Application:
        """An aiohttp application serving the Container Codes API over this front end (its update sockets
        are its own)."""
        errors = error_middleware(seed_error_body, name="container codes", body_limit=lambda request: self.body_limit,
                                  request_id=request_id)
        app = web.Application(middlewares=[errors, authenticate], client_max_size=self.body_limit)
        app[keys.COMPAT] = self.services
        app[STORE] = self.store
        app[FILE_AREA] = self.files
        app[JOB_RUNNER] = self.jobs
        app[PROXY] = self.proxy
        app[UPDATES] = UpdateSockets(self.services)
        app.on_shutdown.append(_close_updates)
        app.on_response_prepare.append(stamp_request_id)
        app.router.add_get("/api/ws/updates", updates_socket, name="updates")
        app.add_routes(routes.routes)
        app.add_routes(containers.routes)
        app.add_routes(proxy_routes.routes)
        return app
