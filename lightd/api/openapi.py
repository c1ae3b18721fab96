"""GET /openapi.json: an OpenAPI 3.1 document of the native API, generated from the router and the pydantic
request and response models the routes declare with `@documented` (api/route_docs.py) — never written by hand a
second time."""

from __future__ import annotations

import re
from typing import Any

import orjson

from aiohttp import web
from pydantic import BaseModel

from lightd import __version__, keys
from lightd.api.middleware import VENDOR_MEDIA_TYPE
from lightd.api.public import is_public_handler, self_authenticated
from lightd.api.query import accepts_query
from lightd.api.route_docs import Response, documented
from lightd.errors import ERROR_CODES
from lightd.http_cache import CachedAnswer

routes = web.RouteTableDef()
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_REF = "#/components/schemas/{model}"
ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorCode": {"type": "string", "enum": list(ERROR_CODES),
                  "description": "Stable and machine-readable: match on it, never on the English `error`."},
    "Error": {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "What went wrong, for people."},
            "code": {"$ref": "#/components/schemas/ErrorCode"},
            "details": {"type": "object", "description": "Always an object, empty when there is nothing to add. A "
                        "validation failure's names the field (`field`) and lists every problem (`errors`: "
                        "`[{field, message}]`)."},
        },
        "required": ["error", "code", "details"],
        "additionalProperties": False,
    },
    "InternalError": {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "code": {"$ref": "#/components/schemas/ErrorCode"},
            "details": {"type": "object", "properties": {"request_id": {"type": "string"}}},
            "request_id": {"type": "string", "description": "Names the logged traceback (never in the body)."},
        },
        "required": ["error", "code", "details", "request_id"],
        "additionalProperties": False,
    },
}
ERROR_STATUSES = {"400": "Bad request (names the field)", "401": "Missing or invalid token",
                  "403": "Vendor media type missing, or token out of scope", "404": "Not found",
                  "409": "Conflict", "413": "Body too large", "500": "Unexpected error (logged with the request id)",
                  "502": "The Docker engine refused the operation", "503": "Docker engine unreachable"}
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "The node token, or a temporary token from POST /auth/tokens (`lightd_...`)."},
    # OpenAPI ignores a header *parameter* named Accept, so the vendor media type is stated as a scheme that
    # every authenticated operation requires along with the token: generated clients name it, and a client
    # sets it once, with the token (e.g. openapi-python-client: `AuthenticatedClient(..., headers={"Accept": ...})`).
    "vendor": {"type": "apiKey", "in": "header", "name": "Accept",
               "description": f"Send `Accept: {VENDOR_MEDIA_TYPE}` (compared case-insensitively; other media types "
                              f"may be listed next to it). Without it an authenticated route answers 403 `forbidden`."},
}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
        if components.setdefault(name, definition) != definition:
            # Components share one namespace: a second model of the same name would silently replace the first.
            raise ValueError(f"OpenAPI: two different models are named {name}")
    return {"$ref": _REF.format(model=model.__name__)}


def _response_schema(response: Response | None, components: dict[str, Any]) -> dict[str, Any]:
    if response is None:
        return {"type": "object"}
    if isinstance(response, dict):
        return response
    return _schema(response, components)


OPENAPI_DOCUMENT: dict[str, Any] = {
    "type": "object", "description": "An OpenAPI 3.1 document (this one).",
    "properties": {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"},
                   "components": {"type": "object"}, "security": {"type": "array", "items": {"type": "object"}}},
    "required": ["openapi", "info", "paths", "components", "security"],
}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        # A query parameter is absent rather than null: describe the non-null form only.
        options = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
        if len(options) == 1:
            prop = {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **options[0]}
        parameter = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append({**parameter, "schema": {k: v for k, v in prop.items() if k != "description"}})
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
    if meta.get("description"):
        operation["description"] = meta["description"]
    for query in (meta.get("query"), meta.get("own_query")):
        if query is not None:
            operation["parameters"] += _query_parameters(query)
    if meta.get("body"):
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(meta["body"], components)}}}
    elif meta.get("form"):
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": meta["form"]}}}
    operation["responses"] = _success(meta, components)
    for code, description in ERROR_STATUSES.items():
        schema = "InternalError" if code == "500" else "Error"
        operation["responses"][code] = {"description": description,
                                        "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}}}
    if is_public_handler(handler):
        operation["security"] = []
    return operation


def _success(meta: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    status = meta.get("status", 200)
    if status == 101:
        return {"101": {"description": "Switching Protocols: the connection is a WebSocket from here on"}}
    if binary := meta.get("binary"):
        media_types = binary if isinstance(binary, tuple) else ("application/octet-stream",)
        content = {media: {"schema": {"type": "string", "format": "binary"}} for media in media_types}
    else:
        content = {meta.get("media_type", "application/json"): {"schema": _response_schema(meta.get("response"), components)}}
    return {str(code): {"description": "Success", "content": content} for code in (status, *meta.get("also", ()))}


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every HTTP route of `app` itself (compat sub-apps have their own APIs)."""
    components: dict[str, Any] = dict(ERROR_SCHEMAS)
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
                                f"`Accept: {VENDOR_MEDIA_TYPE}` (the `bearer` and `vendor` security schemes). Every "
                                f"error answers `{{error, code, details}}` with `code` one of `ErrorCode`; times are "
                                f"RFC 3339 UTC strings."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items())), "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": [], "vendor": []}],
    }


@routes.get("/openapi.json")
@self_authenticated
@accepts_query(None)
@documented(response=OPENAPI_DOCUMENT)
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return await request.app[keys.OPENAPI].response(request)


class OpenApiDocument:
    """The document of the application serving it, built at its first request (the route table is frozen by
    then) and served from then on, with its ETag and gzip encoding. Building it takes ~60 ms of the event loop,
    and the route needs no token: built per request, one client asking in a loop would stall every console."""

    def __init__(self) -> None:
        self._body: bytes | None = None
        self._answer = CachedAnswer()

    async def response(self, request: web.Request) -> web.Response:
        if self._body is None:
            self._body = orjson.dumps(build_document(request.app))
        return await self._answer.response(request, self._body)
