"""GET /openapi.json: an OpenAPI 3.1 document of the native API, generated from the router and the pydantic
request models the routes declare with `@documented` — never written by hand a second time."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from lightd import __version__
from lightd.api.middleware import VENDOR_MEDIA_TYPE
from lightd.api.public import is_public_handler, self_authenticated
from lightd.api.responses import accepts_query, json_response

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
routes = web.RouteTableDef()
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "details": {}},
    "required": ["error"],
}
ERROR_STATUSES = {"400": "Bad request (names the field)", "401": "Missing or invalid token",
                  "403": "Vendor media type missing, or token out of scope", "404": "Not found",
                  "409": "Conflict", "413": "Body too large", "503": "Docker engine unreachable"}


def documented(*, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
               status: int = 200, summary: str | None = None, binary: bool = False) -> Callable[[H], H]:
    """Declare what a route reads and answers, for the OpenAPI document. `query` is also the whole of the
    query string the route accepts: `query_middleware` refuses any other parameter."""

    def mark(handler: H) -> H:
        handler.__openapi__ = {"body": body, "query": query, "status": status, "summary": summary,  # type: ignore[attr-defined]
                               "binary": binary}
        if query is not None:
            handler.__query__ = query  # type: ignore[attr-defined]
        return handler

    return mark


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        # A query parameter is absent rather than null: describe the non-null form only.
        options = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
        if len(options) == 1:
            prop = {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **options[0]}
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return parameters


def _operation(method: str, path: str, handler: Any, components: dict[str, Any]) -> dict[str, Any]:
    meta = getattr(handler, "__openapi__", {})
    doc = (handler.__doc__ or "").strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{handler.__name__}",
        "summary": meta.get("summary") or (doc[0] if doc else handler.__name__.replace("_", " ")),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PARAM.findall(path)
        ],
    }
    if meta.get("query"):
        operation["parameters"] += _query_parameters(meta["query"])
    if meta.get("body"):
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(meta["body"], components)}}}
    status = str(meta.get("status", 200))
    content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}} if meta.get("binary") \
        else {"application/json": {"schema": {"type": "object"}}}
    operation["responses"] = {status: {"description": "Success", "content": content}}
    for code, description in ERROR_STATUSES.items():
        operation["responses"][code] = {"description": description,
                                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if is_public_handler(handler):
        operation["security"] = []
    return operation


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every HTTP route of `app` itself (compat sub-apps have their own APIs)."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "*") or getattr(route.handler, "__openapi_skip__", False):
            continue
        if path.startswith("/compat/"):  # the front ends' own APIs, documented by their seeds
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path, route.handler, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "lightd", "version": __version__,
                 "description": f"Every route but the public ones needs `Authorization: Bearer lightd_<token>` and "
                                f"`Accept: {VENDOR_MEDIA_TYPE}`."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@routes.get("/openapi.json")
@self_authenticated
@accepts_query(None)
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return json_response(build_document(request.app))


openapi.__openapi_skip__ = True  # type: ignore[attr-defined]
