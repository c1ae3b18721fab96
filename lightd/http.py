"""HTTP helpers the native API and the compat front ends share: JSON answers (orjson), request bodies read
into pydantic models, integer query parameters, the bearer token of a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from lightd.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(data: Any) -> str:
    return orjson.dumps(data, default=_default).decode()


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default), status=status, content_type="application/json", headers=headers
    )


def own_body_limit(limit: Callable[[web.Request], int]) -> Callable[[H], H]:
    """Give a route that streams its body (an upload) its own limit on the declared Content-Length instead of
    api.max_body_bytes; the route bounds what it actually reads itself (never request.read()/post())."""

    def mark(handler: H) -> H:
        handler.__body_limit__ = limit  # type: ignore[attr-defined]
        return handler

    return mark


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def ascii_int(text: str) -> int | None:
    """The integer a string of ASCII digits spells; None for anything else (str.isdigit() admits "²",
    which int() refuses)."""
    return int(text) if text.isascii() and text.isdigit() else None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter from `low` to `high` (`default` when absent); 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None or not low <= value <= high:
        raise ValidationFailed(f"{name}: must be an integer from {low} to {high}, not '{raw[:64]}'",
                               details={"field": name})
    return value


def validation_error(exc: ValidationError, where: str = "") -> ValidationFailed:
    """A 400 naming the first bad field, with every problem in details."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        problems.append({"field": field, "message": err["msg"]})
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    prefix = f"{where} " if where else ""
    return ValidationFailed(f"{prefix}{first['field']}: {first['message']}", details=problems)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationFailed("request body must be a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"malformed JSON: {exc}") from None


async def read_model(request: web.Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Parse the JSON body into `model`; 400 naming the field on any problem."""
    data = await read_json(request, allow_empty=allow_empty)
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
