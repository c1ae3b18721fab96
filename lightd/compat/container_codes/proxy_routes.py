"""`/api/proxy/*` (config, upstreams, routes, stats) and the data plane `/proxy/{path}` (see proxy.py)."""

from __future__ import annotations

import secrets

from aiohttp import web

from lightd.compat.container_codes.proxy import PROXY, SETTING, ProxyService
from lightd.compat.container_codes.proxy_models import ProxyConfig, Route, Upstream
from lightd.errors import Conflict, NotFound, ValidationFailed
from lightd.http import json_response, read_model

routes = web.RouteTableDef()


def _proxy(request: web.Request) -> ProxyService:
    return request.config_dict[PROXY]


# -- management routes -------------------------------------------------------------------------------
@routes.get("/api/proxy/config", name="proxy_config")
async def get_config(request: web.Request) -> web.Response:
    proxy = _proxy(request)
    config = await proxy.config()
    return json_response({**config.model_dump(), "path_prefix": "/proxy",
                          "upstreams": len(await proxy.upstreams()), "routes": len(await proxy.routes())})


@routes.put("/api/proxy/config", name="proxy_config_put")
async def put_config(request: web.Request) -> web.Response:
    config = await read_model(request, ProxyConfig)
    await _proxy(request).store.set_setting(SETTING, config.model_dump())
    return json_response({**config.model_dump(), "path_prefix": "/proxy"})


@routes.get("/api/proxy/upstreams", name="upstream_list")
async def list_upstreams(request: web.Request) -> web.Response:
    upstreams = [u.model_dump() for u in await _proxy(request).upstreams()]
    return json_response({"upstreams": upstreams, "total": len(upstreams)})


@routes.post("/api/proxy/upstreams", name="upstream_create")
async def create_upstream(request: web.Request) -> web.Response:
    upstream = await read_model(request, Upstream)
    if not await _proxy(request).store.put_proxy_item("upstreams", upstream.name, upstream.model_dump(), create=True):
        raise Conflict(f"upstream {upstream.name!r} already exists", details={"upstream": upstream.name})
    return json_response(upstream.model_dump(), status=201)


@routes.get("/api/proxy/upstreams/{name}", name="upstream_get")
async def get_upstream(request: web.Request) -> web.Response:
    return json_response((await _proxy(request).upstream(request.match_info["name"])).model_dump())


@routes.put("/api/proxy/upstreams/{name}", name="upstream_put")
async def put_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _proxy(request).upstream(name)
    upstream = await read_model(request, Upstream)
    if upstream.name != name:
        raise ValidationFailed("name: cannot be changed (delete and create instead)", details={"field": "name"})
    await _proxy(request).store.put_proxy_item("upstreams", name, upstream.model_dump(), create=False)
    return json_response(upstream.model_dump())


@routes.delete("/api/proxy/upstreams/{name}", name="upstream_delete")
async def delete_upstream(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    proxy = _proxy(request)
    await proxy.upstream(name)
    users = [r.id for r in await proxy.routes() if r.upstream == name]
    if users:
        raise Conflict(f"upstream {name!r} is used by route(s) {', '.join(map(str, users))}", details={"routes": users})
    await _proxy(request).store.delete_proxy_item("upstreams", name)
    return json_response({"name": name, "deleted": True})


@routes.get("/api/proxy/routes", name="route_list")
async def list_routes(request: web.Request) -> web.Response:
    items = [r.model_dump() for r in await _proxy(request).routes()]
    return json_response({"routes": items, "total": len(items)})


@routes.post("/api/proxy/routes", name="route_create")
async def create_route(request: web.Request) -> web.Response:
    route = await read_model(request, Route)
    await _known_upstream(request, route.upstream)
    route.id = route.id or f"route_{secrets.token_hex(6)}"
    if not await _proxy(request).store.put_proxy_item("routes", route.id, route.model_dump(), create=True):
        raise Conflict(f"route {route.id!r} already exists", details={"route_id": route.id})
    return json_response(route.model_dump(), status=201)


async def _known_upstream(request: web.Request, name: str) -> None:
    try:
        await _proxy(request).upstream(name)
    except NotFound:
        raise ValidationFailed(f"upstream: {name!r} does not exist", details={"field": "upstream"}) from None


@routes.get("/api/proxy/routes/{id}", name="route_get")
async def get_route(request: web.Request) -> web.Response:
    return json_response((await _proxy(request).route(request.match_info["id"])).model_dump())


@routes.put("/api/proxy/routes/{id}", name="route_put")
async def put_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    await _proxy(request).route(route_id)
    route = await read_model(request, Route)
    await _known_upstream(request, route.upstream)
    route.id = route_id
    await _proxy(request).store.put_proxy_item("routes", route_id, route.model_dump(), create=False)
    return json_response(route.model_dump())


@routes.delete("/api/proxy/routes/{id}", name="route_delete")
async def delete_route(request: web.Request) -> web.Response:
    route_id = request.match_info["id"]
    await _proxy(request).route(route_id)
    await _proxy(request).store.delete_proxy_item("routes", route_id)
    return json_response({"id": route_id, "deleted": True})


@routes.get("/api/proxy/stats", name="proxy_stats")
async def proxy_stats(request: web.Request) -> web.Response:
    return json_response(await _proxy(request).stats())


@routes.route("*", "/proxy/{path:.*}", name="proxy_forward")
async def forward(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).forward(request, "/" + request.match_info["path"])
