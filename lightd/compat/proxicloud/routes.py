"""ProxiCloud's routes (seed proxicloud-api.md, as compat.md §3.3 recommends): reads answer bare objects,
actions flat `{"success": true, ...}` with a UPID `task_id`, errors `{"success": false, "error"}`.
Power actions begin and answer at once (`starting`, `stopping`, `rebooting`), as Proxmox tasks do."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from lightd import __version__ as lightd_version
from lightd.compat.base import require_engine, services_of
from lightd.compat.power import run_power
from lightd.compat.proxicloud import analytics, creating
from lightd.compat.proxicloud.models import (
    CreateRequest, path_vmid, query_bool, query_choice,
)
from lightd.compat.proxicloud.node import node_of
from lightd.compat.proxicloud.templates import TemplateCatalogue
from lightd.compat.proxicloud.views import views_of
from lightd.errors import LightdError, ValidationFailed
from lightd.http import json_response, query_int, read_model

routes = web.RouteTableDef()

PROXICLOUD_VERSION = "1.0.0"
RECENT_ACTIVITY = 10
SORT_KEYS = ("vmid", "name", "status", "cpu_usage")
STATUSES = ("running", "stopped", "paused")
STOP_TIMEOUT_DEFAULT = 60
STOP_TIMEOUT_MAX = 3600


def _task(request: web.Request, vmid: int, status: str, task_type: str, **extra: Any) -> web.Response:
    upid = node_of(request).upid(task_type, vmid)
    return json_response({"success": True, "vmid": vmid, **extra, "status": status, "task_id": upid})


# -- health & info ------------------------------------------------------------------------------------
@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    services = services_of(request)
    connected = await services.servers.engine.available()
    try:
        await services.store.schema_version()
        database = True
    except Exception:  # noqa: BLE001 - any failure means the database is not usable
        database = False
    return json_response(
        {"status": "healthy", "proxmox_connected": connected, "database_connected": database,
         "timestamp": int(time.time())},
        headers={"X-Cache-Status": "online" if connected else "offline"},
    )


@routes.get("/api/info")
async def info(request: web.Request) -> web.Response:
    await require_engine(request)
    engine, host = await services_of(request).servers.engine.engine_info(), await views_of(request).host()
    return json_response({
        "node_name": node_of(request).name, "version": str(engine.get("ServerVersion") or ""),
        "uptime": host.uptime, "cpu_cores": host.cpu_cores, "total_memory": host.memory_total,
        "proxicloud_version": PROXICLOUD_VERSION, "lightd_version": lightd_version,
    })


# -- containers ---------------------------------------------------------------------------------------
@routes.get("/api/containers")
async def list_containers(request: web.Request) -> web.Response:
    status = query_choice(request, "status", STATUSES, None)
    sort = query_choice(request, "sort", SORT_KEYS, "vmid")
    order = query_choice(request, "order", ("asc", "desc"), "asc")
    await require_engine(request)
    items = [c.item() for c in await views_of(request).all()]
    if status is not None:
        items = [i for i in items if i["status"] == status]
    items.sort(key=lambda i: (i[sort], i["vmid"]), reverse=order == "desc")
    running = sum(1 for i in items if i["status"] == "running")
    stopped = sum(1 for i in items if i["status"] == "stopped")
    return json_response({"containers": items, "total": len(items), "running": running, "stopped": stopped})


@routes.get("/api/containers/generate-name")
async def generate_name(request: web.Request) -> web.Response:
    name, counter = node_of(request).generate_name()
    return json_response({"name": name, "counter": counter})


@routes.get("/api/containers/search")
async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    if not query:
        raise ValidationFailed("q: a search query is required")
    if len(query) > 255:
        raise ValidationFailed("q: at most 255 characters")
    await require_engine(request)
    needle = query.lower()
    results = [c.brief() for c in await views_of(request).all()
               if needle in c.name.lower() or (c.ip_address and needle in c.ip_address) or needle == str(c.vmid)]
    return json_response({"query": query, "results": results, "total": len(results)})


@routes.post("/api/containers")
async def create_container(request: web.Request) -> web.Response:
    body = await read_model(request, CreateRequest)
    services, node = services_of(request), node_of(request)
    await require_engine(request)
    template = await TemplateCatalogue(services).checked(body.template)
    name = body.hostname or node.generate_name()[0]
    vmid, server = await creating.create_container(services, node, name, template, body.options(template),
                                                   memory_mb=body.memory, cores=body.cores, start=body.start)
    status = "running" if server.state != "offline" else "stopped"
    upid = node.upid("vzcreate", vmid)
    return json_response({"success": True, "vmid": vmid, "name": name, "task_id": upid, "status": status}, status=201)


@routes.get("/api/containers/{vmid}")
async def container_detail(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    return json_response((await views_of(request).one(vmid)).detail())


@routes.get("/api/containers/{vmid}/status")
async def container_status(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    container = await views_of(request).one(vmid)
    # pid: Docker's main pid of the container is not exposed by lightd's environment
    return json_response({"vmid": vmid, "status": container.status, "uptime": container.uptime, "pid": None})


@routes.post("/api/containers/{vmid}/start")
async def start(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    server = await node_of(request).find(vmid)
    await run_power(services_of(request).servers, "proxicloud", "start", server.id)
    return _task(request, vmid, "starting", "vzstart")


@routes.post("/api/containers/{vmid}/stop")
async def stop(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    force = query_bool(request, "force", False)
    timeout = query_int(request, "timeout", STOP_TIMEOUT_DEFAULT, 0, STOP_TIMEOUT_MAX)
    await require_engine(request)
    server = await node_of(request).find(vmid)
    verb = "stop" if force else "shutdown"
    await run_power(services_of(request).servers, "proxicloud", verb, server.id, timeout=float(timeout))
    return _task(request, vmid, "stopping", "vzstop" if force else "vzshutdown")


@routes.post("/api/containers/{vmid}/reboot")
async def reboot(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    server = await node_of(request).find(vmid)
    await run_power(services_of(request).servers, "proxicloud", "reboot", server.id, label=f"Container {vmid}")
    return _task(request, vmid, "rebooting", "vzreboot")


@routes.delete("/api/containers/{vmid}")
async def delete_container(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    purge = query_bool(request, "purge", True)
    await require_engine(request)
    services, node = services_of(request), node_of(request)
    server = await node.find(vmid)
    volume_id, owned = server.spec.volume_id, server.spec.owned_volume
    # The container's own volume (its rootfs) always goes with it, as a Proxmox disk does; with purge a
    # volume it was given goes too, unless another container still uses it.
    await services.servers.delete(server.id)
    await node.retire(server.id)
    volume = "deleted" if owned else "kept"
    if purge and not owned:
        try:
            await services.volumes.delete(volume_id)
            volume = "deleted"
        except LightdError as exc:
            volume = f"kept: {exc.message}"
    return _task(request, vmid, "deleted", "vzdestroy", volume=volume)


# -- analytics ----------------------------------------------------------------------------------------
@routes.get(r"/api/analytics/{vmid}/{metric:cpu|memory|network|disk|summary}")
async def metrics(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    metric = request.match_info["metric"]
    window = analytics.parse_window(request.query)
    node = node_of(request)
    server = await node.find(vmid)
    rows = await node.store.series(vmid, time.time() - window.seconds, window.bucket)
    if metric != "summary":
        return json_response(analytics.shape(metric, vmid, window, rows))
    views = views_of(request)
    container = await views.container(vmid, server, await views.storage_total())
    return json_response(analytics.summary(
        vmid, window, rows, cpu_now=container.cpu_usage, memory_now=container.memory_usage,
        memory_total=container.memory_total, disk_usage=container.disk_usage, disk_total=container.disk_total,
    ))


# -- templates ----------------------------------------------------------------------------------------
@routes.get("/api/templates")
async def templates(request: web.Request) -> web.Response:
    await require_engine(request)
    entries = await TemplateCatalogue(services_of(request)).featured()
    return json_response({"templates": entries, "total": len(entries)})


@routes.get("/api/templates/all")
async def all_templates(request: web.Request) -> web.Response:
    await require_engine(request)
    entries = await TemplateCatalogue(services_of(request)).all()
    return json_response({"templates": entries, "total": len(entries)})


@routes.get(r"/api/templates/{template:.+}/info")
async def template_info(request: web.Request) -> web.Response:
    await require_engine(request)
    return json_response(await TemplateCatalogue(services_of(request)).info(request.match_info["template"]))


# -- dashboard ----------------------------------------------------------------------------------------
@routes.get("/api/dashboard/summary")
async def dashboard(request: web.Request) -> web.Response:
    services, node, views = services_of(request), node_of(request), views_of(request)
    await require_engine(request)
    containers = await views.all()
    host = await views.host()
    engine = await services.servers.engine.engine_info()
    running = sum(1 for c in containers if c.status == "running")
    return json_response({
        "containers": {"total": len(containers), "running": running, "stopped": len(containers) - running, "paused": 0},
        "resources": {
            "cpu": {"used": host.cpu_percent, "total": host.cpu_cores},
            "memory": {"used": host.memory_used, "total": host.memory_total, "percent": host.memory_percent},
            "storage": {"used": host.storage_used, "total": host.storage_total, "percent": host.storage_percent},
        },
        "node": {"name": node.name, "version": str(engine.get("ServerVersion") or ""), "uptime": host.uptime,
                 "cpu_cores": host.cpu_cores, "load_average": host.load_average},
        "recent_activity": await node.recent_activity(RECENT_ACTIVITY),
    })
