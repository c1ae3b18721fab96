"""Reading requests into pydantic models and writing JSON answers (orjson)."""

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


def dumps(data: Any) -> str:
    return orjson.dumps(data, default=_default).decode()


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default), status=status, content_type="application/json", headers=headers
    )


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


def accepts_query(model: type[BaseModel] | None) -> Callable[[H], H]:
    """Declare the whole query string a route reads (None: no parameter at all); `query_middleware` refuses
    anything else. `@documented(query=...)` declares it too."""

    def mark(handler: H) -> H:
        handler.__query__ = model  # type: ignore[attr-defined]
        return handler

    return mark


def query_names(model: type[BaseModel] | None) -> frozenset[str]:
    """The query parameters `model` reads (none for None)."""
    if model is None:
        return frozenset()
    return frozenset(field.alias or name for name, field in model.model_fields.items())


def refuse_unknown_query(request: web.Request, accepted: frozenset[str]) -> None:
    """400 naming the first query parameter the route does not read: one answer on every native route,
    rather than some routes refusing and others silently ignoring a misspelt filter."""
    for name in request.query:
        if name not in accepted:
            shown = name[:64]
            listed = ", ".join(sorted(accepted)) or "none"
            raise ValidationFailed(f"query {shown}: unknown query parameter (this route reads: {listed})",
                                   details=[{"field": shown, "message": "unknown query parameter"}])


def read_query(request: web.Request, model: type[M]) -> M:
    """Parse the query string into `model`; 400 naming the parameter on any problem, an unknown one included."""
    refuse_unknown_query(request, query_names(model))
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, "query") from None
