"""The one path from an exception to an HTTP error answer, for the native API and every compat front end.

`error_middleware(shape, ...)` maps each failure once, by type:
- a `LightdError` a handler or service raised: its own status (`Origin.RAISED`);
- aiohttp's own HTTP errors (no route 404, wrong method 405 with its `Allow` header, body too large 413,
  ...): the member of the tree for that status, `BadRequest` for any other 4xx, keeping aiohttp's status
  (`Origin.HTTP`);
- any other exception: a 500, logged with a request id and the escaped method and path, and no traceback
  in the body (`Origin.UNHANDLED`).
A front end supplies only its shape: `(request, failure) -> ErrorAnswer`, its body (and the status and
headers where its API differs). Error codes are `errors.py`'s; a front end may translate them, never
define them again.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from lightd import keys
from lightd.access_log import escape
from lightd.errors import (
    BadRequest, Forbidden, LightdError, MethodNotAllowed, NotFound, PayloadTooLarge, RangeNotSatisfiable, Unauthorized,
)
from lightd.http import json_response

log = logging.getLogger(__name__)


class Origin(enum.Enum):
    RAISED = "raised"  # a LightdError raised by a handler or a service
    HTTP = "http"  # aiohttp's own answer: no such route, wrong method, body too large...
    UNHANDLED = "unhandled"  # any other exception: a bug, logged


@dataclass(frozen=True)
class Failure:
    """One failed request as the error path saw it."""

    error: LightdError  # aiohttp's errors and unhandled exceptions as members of the tree too
    status: int
    request_id: str
    origin: Origin
    reason: str  # the HTTP reason phrase (aiohttp's own for its errors)


class ErrorAnswer(NamedTuple):
    """A front end's answer to one failure: its body, and the status and headers when they differ."""

    body: dict[str, Any]
    status: int | None = None  # None: the failure's status
    headers: Mapping[str, str] | None = None


ErrorShape = Callable[[web.Request, Failure], ErrorAnswer]
RequestId = Callable[[web.Request], str]
BodyLimit = Callable[[web.Request], int]

# aiohttp's own answers as members of the tree (any other 4xx is a BadRequest with aiohttp's status).
_HTTP_ERRORS: dict[int, type[LightdError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
                                               413: PayloadTooLarge}


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


def new_request_id(request: web.Request) -> str:
    """The id lightd.log_context gave the request (its log lines carry it), or a new one."""
    return request.get(keys.REQUEST_ID) or uuid.uuid4().hex[:12]


def error_middleware(shape: ErrorShape, *, name: str, body_limit: BodyLimit | None = None,
                     request_id: RequestId = new_request_id) -> Middleware:
    """The middleware that answers every failure of an application in `shape`. `name` labels its log
    lines; `body_limit` (the application's body limit) words aiohttp's 413; `request_id` names a failure."""

    @web.middleware
    async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        allow: str | None = None
        try:
            return await handler(request)
        except LightdError as exc:
            failure = Failure(exc, exc.status, request_id(request), Origin.RAISED, HTTPStatus(exc.status).phrase)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.empty_body:
                raise
            allow = exc.headers.get("Allow")
            failure = Failure(_tree_member(request, exc, body_limit), exc.status, request_id(request), Origin.HTTP,
                              exc.reason)
        except Exception:
            rid = request_id(request)
            # SECURITY: log forging: the path arrives percent-decoded (`%0a` is a newline).
            log.exception("%s: unhandled error in %s %s (request %s)", name, escape(request.method),
                          escape(request.rel_url.path), rid)
            failure = Failure(LightdError("internal server error", details={"request_id": rid}), 500, rid,
                              Origin.UNHANDLED, HTTPStatus.INTERNAL_SERVER_ERROR.phrase)
        answer = shape(request, failure)
        headers = {**(answer.headers or {}), **({"Allow": allow} if allow else {})}
        if isinstance(failure.error, RangeNotSatisfiable):  # RFC 9110 15.5.17: the representation's length
            headers["Content-Range"] = f"bytes */{failure.error.size}"
        return json_response(answer.body, status=answer.status or failure.status, headers=headers or None)

    return render_errors


def _tree_member(request: web.Request, exc: web.HTTPException, body_limit: BodyLimit | None) -> LightdError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge) and body_limit is not None:
        return body_too_large(body_limit(request))
    # aiohttp's own text is "<status>: <reason>"; a text of its choosing says more than the reason.
    message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
    return _HTTP_ERRORS.get(exc.status, BadRequest)(message)
