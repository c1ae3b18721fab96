"""The HTTP edge: the one place errors become HTTP responses, and the auth and vendor-header checks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from lightd import keys
from lightd.access_log import escape
from lightd.api.public import is_public, is_public_handler
from lightd.api.responses import json_response, query_names, refuse_unknown_query
from lightd.errors import BadRequest, Forbidden, LightdError, MethodNotAllowed, NotFound, PayloadTooLarge, Unauthorized

log = logging.getLogger(__name__)

VENDOR_MEDIA_TYPE = "application/vnd.pkglatv1+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: LightdError) -> web.Response:
    return json_response(exc.to_dict(), status=exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the LightdError tree (and aiohttp's own HTTP errors) to `{"error", "code", "details"}` bodies."""
    try:
        return await handler(request)
    except LightdError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[keys.CONFIG].api.max_body_bytes
        return error_response(PayloadTooLarge(f"request body is larger than the limit of {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
        body = _HTTP_ERRORS.get(exc.status, BadRequest)(message).to_dict()
        return json_response(body, status=exc.status, headers=_allowed(exc))
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        # SECURITY: log forging: the path arrives percent-decoded (`%0a` is a newline).
        log.exception("unhandled error in %s %s (request %s)", escape(request.method), escape(request.rel_url.path),
                      request_id)
        body = LightdError("internal server error", details={"request_id": request_id}).to_dict()
        return json_response({**body, "request_id": request_id}, status=500)


# aiohttp's own answers (no such route, wrong method...) in the same shape and codes as ours.
_HTTP_ERRORS: dict[int, type[LightdError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
                                               413: PayloadTooLarge}


def _allowed(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A declared body over the limit is refused before any handler runs, whether or not it reads one
    (bodies without a declared length are capped by aiohttp's client_max_size as they are read)."""
    limit = request.app[keys.CONFIG].api.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    return await handler(request)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


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
