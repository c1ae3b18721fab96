"""The LXD panel's routes (the seed `lxd-panel-api.md`, as `NX2406/lxd` at 42bb727 answers them): thin
handlers over InstanceViews and the ServerManager. Operations answer HTTP 200 with `success` true or
false, as the panel does; only detail and resources answer 404, and everything needing the engine 503
while it is away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from lightd.compat.base import services_of
from lightd.compat.lxd_panel.monitor import MONITOR
from lightd.compat.lxd_panel.views import VIEWS, now_iso
from lightd.compat.power import run_power
from lightd.errors import Conflict, DockerUnavailable, LightdError, ValidationFailed
from lightd.http import json_response
from lightd.servers.server import Server

routes = web.RouteTableDef()

API_NAME = "LXD管理面板API"
API_VERSION = "1.0.0"
VERBS = {"start": "启动", "stop": "停止", "restart": "重启", "delete": "删除"}
_BOOL = TypeAdapter(bool)


class QueryInvalid(ValidationFailed):
    """A query parameter FastAPI would refuse: answered 422 with its `{"detail": [...]}` list."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid query", details=errors)
        self.errors = errors


def _outcome(success: bool, message: str) -> web.Response:
    return json_response({"success": success, "message": message, "data": None})


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter parsed as FastAPI/pydantic do (true/false, 1/0, yes/no, on/off...)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return _BOOL.validate_python(raw)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_context=False):
            errors.append({**error, "loc": ["query", name, *error["loc"]]})
        raise QueryInvalid(errors) from None


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    return json_response({"name": API_NAME, "version": API_VERSION, "status": "running", "timestamp": now_iso()})


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    connected = await services_of(request).servers.engine.available()
    return json_response({"status": "healthy", "lxd_connected": connected})


@routes.get("/api/host/info")
async def host_info(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[VIEWS].host())


@routes.get("/api/instances")
async def list_instances(request: web.Request) -> web.Response:
    await services_of(request).servers.require_engine()
    return json_response([instance.info() for instance in await request.config_dict[VIEWS].instances()])


@routes.get("/api/instances/{name}")
async def instance_detail(request: web.Request) -> web.Response:
    views = request.config_dict[VIEWS]
    await services_of(request).servers.require_engine()
    instance = await views.instance(views.find(request.match_info["name"]))
    return json_response(instance.detail())


@routes.get("/api/instances/{name}/resources")
async def instance_resources(request: web.Request) -> web.Response:
    views = request.config_dict[VIEWS]
    await services_of(request).servers.require_engine()
    return json_response(await views.resources(views.find(request.match_info["name"])))


async def _operation(request: web.Request, verb: str, work: Callable[[Server], Awaitable[object]]) -> web.Response:
    """Run `work` on the named instance; the panel's outcome shape either way (an engine outage is a 503)."""
    name = request.match_info["name"]
    manager = services_of(request).servers
    await manager.require_engine()
    try:
        await work(request.config_dict[VIEWS].find(name))
    except DockerUnavailable:
        raise
    except LightdError as exc:
        return _outcome(False, f"实例 {name} {VERBS[verb]}失败: {exc.message}")
    return _outcome(True, f"实例 {name} {VERBS[verb]}成功")


@routes.post("/api/instances/{name}/{action:start|stop|restart}")
async def power(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    manager = services_of(request).servers
    return await _operation(request, action, lambda server: run_power(manager, "lxd_panel", action, server.id))


@routes.delete("/api/instances/{name}")
async def delete_instance(request: web.Request) -> web.Response:
    force = query_bool(request, "force")
    manager = services_of(request).servers

    async def delete(server: Server) -> None:
        if server.state != "offline":
            if not force:
                # LXD refuses to delete a running instance; the panel reports it as a failed operation.
                raise Conflict("实例正在运行，请先停止或使用 force=true")
            try:
                await manager.power_and_wait(server.id, "stop")
            except Conflict:
                pass  # busy with another action: the delete below kills it
        await manager.delete(server.id)

    return await _operation(request, "delete", delete)


@routes.get("/ws/monitor")
async def monitor(request: web.Request) -> web.StreamResponse:
    return await request.config_dict[MONITOR].serve(request)
