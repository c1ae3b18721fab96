"""Cross-origin requests (CORS) for the native API and every compat front end, and the `Origin` check of their
WebSockets: one policy per application (`keys.CORS`, from `api.cors_origins` or `compat.<name>.cors_origins`).

- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by `middleware`, which
  sits just inside each application's error middleware and before any authentication: 204 with the allowed
  methods, headers and max age (Wings' values) for an allowed origin, 403 in that application's error shape
  for a refused one. A front end mounted under `/compat/<name>` answers its own preflights: the main app's
  middleware and its auth (`api/public.py: is_public`) let them through to the front end's.
- Every other response gets its headers in `on_response_prepare` (so also errors, streamed files and
  WebSocket handshakes): `Vary: Origin`, and for an allowed origin `Access-Control-Allow-Origin` with the
  exposed headers. `*` is sent only to a request without credentials allowed by a `"*"` entry; a request
  carrying `Cookie` or `Authorization` (or a preflight announcing `Authorization`) gets its exact origin back
  instead, and `Access-Control-Allow-Credentials: true` is sent only to origins listed by name. A refused
  origin gets no CORS header: the browser withholds the response.
- Browsers do not apply CORS to WebSockets: each socket calls `require_socket_origin` (Socket.IO through
  `engineio_origin_check`). No `Origin` (a non-browser client) and the socket's own origin are allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from lightd import keys
from lightd.errors import Forbidden

ANY_ORIGIN = "*"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# Wings' list, the token headers of the front ends (X-API-Key), and what their UIs send: X-Requested-With
# (jQuery), X-Request-Id (Container Codes), the conditional and range headers of file downloads.
ALLOW_HEADERS = ", ".join((
    "Accept", "Accept-Encoding", "Authorization", "Cache-Control", "Content-Type", "Content-Length", "Origin",
    "X-Real-IP", "X-CSRF-Token", "X-API-Key", "X-Requested-With", "X-Request-Id", "Range", "If-Range",
    "If-None-Match", "If-Modified-Since",
))
# Response headers a page's script may read besides the safelisted ones.
EXPOSE_HEADERS = "X-Request-Id, X-Cache-Status, ETag, Content-Range, Accept-Ranges, Content-Disposition, Location"
MAX_AGE = "7200"  # Wings': Chromium caps a preflight's cache at two hours
CREDENTIAL_HEADERS = (hdrs.COOKIE, hdrs.AUTHORIZATION)


@dataclass(frozen=True)
class CorsPolicy:
    """The origins one application admits: by name (credentials allowed) and/or any (`"*"`)."""

    listed: frozenset[str]
    any_origin: bool

    @classmethod
    def of(cls, origins: Iterable[str]) -> CorsPolicy:
        """From a validated config list (`config_types.normalize_origin`'s entries)."""
        entries = frozenset(origins)
        return cls(listed=entries - {ANY_ORIGIN}, any_origin=ANY_ORIGIN in entries)

    def __bool__(self) -> bool:
        return self.any_origin or bool(self.listed)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.lower() in self.listed

    def names(self, origin: str) -> bool:
        """The origin is listed by name (the only ones granted credentials)."""
        return origin.lower() in self.listed


def policy_owner(request: web.Request) -> web.Application | None:
    """The innermost application of this request that has a policy (a mounted front end's, else the main one)."""
    for app in reversed(request.match_info.apps):
        if keys.CORS in app:
            return app
    return None


def policy_of(request: web.Request) -> CorsPolicy | None:
    owner = policy_owner(request)
    return None if owner is None else owner[keys.CORS]


def is_preflight(request: web.Request) -> bool:
    return (request.method == hdrs.METH_OPTIONS and hdrs.ORIGIN in request.headers
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)


def _announces_credentials(request: web.Request) -> bool:
    if is_preflight(request):
        announced = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").lower()
        return any(name.strip() in ("authorization", "cookie") for name in announced.split(","))
    return any(name in request.headers for name in CREDENTIAL_HEADERS)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers a preflight before authentication: 204 for an allowed origin, 403 (in the application's error
    shape, by the error middleware outside this one) for a refused one."""
    if not is_preflight(request) or policy_owner(request) is not request.app:
        return await handler(request)  # not a preflight, or an inner (mounted) application answers it
    if not request.app[keys.CORS].allows(request.headers[hdrs.ORIGIN]):
        raise Forbidden("cross-origin requests from this origin are not allowed")
    return web.Response(status=204, headers={
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
        hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
    })


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of every answer (idempotent: a mounted front end's request runs
    the main app's signal and its own)."""
    policy = policy_of(request)
    if not policy:
        return
    if "origin" not in (part.strip().lower() for part in response.headers.get(hdrs.VARY, "").split(",")):
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)
    origin = request.headers.get(hdrs.ORIGIN)
    # Whatever a wrapped library (engine.io) set is replaced by this one decision.
    response.headers.popall(hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS, None)
    if origin is None or not policy.allows(origin):
        response.headers.popall(hdrs.ACCESS_CONTROL_ALLOW_ORIGIN, None)
        return
    named = policy.names(origin)
    # SECURITY: a credentialed request never gets `*` back; only origins listed by name get credentials.
    echo = named or _announces_credentials(request)
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin if echo else ANY_ORIGIN
    response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
    if named:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"


def install(app: web.Application, origins: Iterable[str]) -> None:
    """Give `app` its policy and its response headers (its `middleware` goes in its middleware list, just
    inside the error middleware)."""
    app[keys.CORS] = CorsPolicy.of(origins)
    app.on_response_prepare.append(add_headers)


def socket_origin_allowed(request: web.Request, origin: str | None) -> bool:
    """A WebSocket's `Origin` against the request's policy: none (not a browser) and the socket's own origin
    are allowed."""
    if origin is None:
        return True
    if origin.lower() == f"{request.scheme}://{request.host}".lower():
        return True
    policy = policy_of(request)
    return policy is not None and policy.allows(origin)


def require_socket_origin(request: web.Request) -> None:
    """Forbidden (each socket refuses it in its own way) for a browser page of an origin not allowed."""
    # SECURITY: cross-site WebSocket hijacking — browsers send any page's socket, cookies and all.
    if not socket_origin_allowed(request, request.headers.get(hdrs.ORIGIN)):
        raise Forbidden("WebSocket connections from this origin are not allowed")


def engineio_origin_check(origin: str | None, environ: dict[str, Any]) -> bool:
    """python-engineio's `cors_allowed_origins` callable: the same check for Socket.IO (polling and socket)."""
    return socket_origin_allowed(environ["aiohttp.request"], origin)
