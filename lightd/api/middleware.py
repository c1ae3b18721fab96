"""The HTTP edge: the one place errors become HTTP responses, and the auth and vendor-header checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from lightd import http_errors, keys
from lightd.api.public import is_public, is_public_handler
from lightd.api.query import query_names, refuse_unknown_query
from lightd.errors import Forbidden, Unauthorized
from lightd.http import bearer_token
from lightd.http_errors import ErrorAnswer, Failure, Origin

VENDOR_MEDIA_TYPE = "application/vnd.pkglatv1+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def native_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """The native shape: `{"error", "code", "details"}` (and the `request_id` of an unhandled error)."""
    body = failure.error.to_dict()
    if failure.origin is Origin.UNHANDLED:
        body["request_id"] = failure.request_id
    return ErrorAnswer(body)


def _body_limit(request: web.Request) -> int:
    return request.app[keys.CONFIG].api.max_body_bytes


error_middleware = http_errors.error_middleware(native_error_body, name="api", body_limit=_body_limit)
"""The LightdError tree (and aiohttp's own HTTP errors) as `{"error", "code", "details"}` bodies."""


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A declared body over the limit is refused before any handler runs, whether or not it reads one
    (bodies without a declared length are capped by aiohttp's client_max_size as they are read)."""
    own = getattr(request.match_info.handler, "__body_limit__", None)  # a streamed upload's (http.own_body_limit)
    limit = own(request) if own is not None else request.app[keys.CONFIG].api.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise http_errors.body_too_large(limit)
    return await handler(request)


def accepts_vendor_type(accept_header: str) -> bool:
    """True when one of the media types in Accept is ours (compared case-insensitively)."""
    for part in accept_header.split(","):
        if part.split(";", 1)[0].strip().lower() == VENDOR_MEDIA_TYPE:
            return True
    return False


def container_of(request: web.Request) -> str | None:
    return request.match_info.get("container_id")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but those in api/public.py needs a valid token (401) and the vendor Accept type (403)."""
    if is_public(request):
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing or malformed Authorization header (expected: Bearer lightd_<token>)")
    tokens = request.config_dict[keys.TOKENS]
    principal = await tokens.authenticate(token, purpose="api", container=container_of(request))
    # Clients of a compat front end (mounted under /compat/<name>) never send our vendor media type.
    foreign = any(keys.FRONT_END in app for app in request.match_info.apps)
    if not foreign and not accepts_vendor_type(request.headers.get("Accept", "")):
        raise Forbidden(f"missing vendor media type: send 'Accept: {VENDOR_MEDIA_TYPE}'")
    request[keys.PRINCIPAL] = principal
    return await handler(request)


_UNDECLARED = object()


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A query parameter a native route does not declare (`@documented(query=...)`, `@accepts_query`) is a
    400 naming it, on every route alike. Self-authenticated routes that declare nothing read their own (the
    console socket's `?token=` and `?batch=`), and compat front ends keep their own query handling."""
    if request.query_string and request.match_info.http_exception is None:
        route = request.match_info.handler
        model = getattr(route, "__query__", _UNDECLARED)
        own = model is _UNDECLARED and is_public_handler(route)
        if not own and not any(keys.FRONT_END in app for app in request.match_info.apps):
            refuse_unknown_query(request, query_names(None if model is _UNDECLARED else model))
    return await handler(request)
