"""What each native route declares for the OpenAPI document (api/openapi.py builds it): `@documented`, and
`View`, the base of the response models that sit next to their routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from lightd.api.field_docstrings import describe_fields

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
Response = type[BaseModel] | dict[str, Any]
"""What a route answers on success: a pydantic model, or a JSON schema for what no model describes."""


class View(BaseModel):
    """Base of the response models: every field is always in the answer (none has a default; null where the
    type says so) and no other field is (`additionalProperties: false`, so a field added to an answer and not
    here fails the document tests); fields' docstrings describe them. Their validators, schemas and
    descriptions are made at first use (the OpenAPI document's), not at import: ~70 models, 45 ms of the
    daemon's start-up."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler, /) -> JsonSchemaValue:
        # Fields' docstrings become their descriptions here, as `use_attribute_docstrings` would make them at
        # import (api/field_docstrings.py says why not).
        schema = handler(core_schema)
        describe_fields(cls, handler.resolve_ref_schema(schema))
        return schema


def documented(*, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
               status: int = 200, summary: str | None = None, binary: bool | tuple[str, ...] = False,
               response: Response | None = None, media_type: str = "application/json", also: tuple[int, ...] = (),
               own_query: type[BaseModel] | None = None, description: str | None = None,
               form: dict[str, Any] | None = None) -> Callable[[H], H]:
    """Declare what a route reads and answers, for the OpenAPI document. `query` is also the whole of the
    query string the route accepts: `query_middleware` refuses any other parameter; `own_query` is documented
    only (a self-authenticated route that reads its own). `response` is the body of `status` (and of the
    statuses in `also`), in `media_type`; `binary` is a download: application/octet-stream, or the media types
    it names (a tuple). `status` 101 is an upgrade (no body). `form` is the JSON schema of a multipart/form-data body (an upload)."""

    def mark(handler: H) -> H:
        handler.__openapi__ = {"body": body, "query": query, "status": status, "summary": summary,  # type: ignore[attr-defined]
                               "binary": binary, "response": response, "media_type": media_type, "also": also,
                               "own_query": own_query, "description": description, "form": form}
        if query is not None:
            handler.__query__ = query  # type: ignore[attr-defined]
        return handler

    return mark
