"""The native API's query strings: each route declares the parameters it reads, and anything else is a 400
(front ends keep their own, looser rules)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from lightd.errors import ValidationFailed
from lightd.http import validation_error

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


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
