"""The routes of ProxiCloud's real web app (`compat.proxicloud.flavour = "app"`), as its Next.js frontend
calls them (`frontend/lib/api.ts`) and its Go backend answers (`backend/internal/handlers/handlers.go`):
bare JSON arrays and objects, `{"error": msg}` on failure. Containers, power, dashboard, templates, storage,
metrics and the console proxy live here; volumes and projects in app_volumes.py and app_projects.py."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from lightd.compat.base import require_engine, services_of
from lightd.compat.power import run_power
from lightd.compat.proxicloud import app_views
from lightd.compat.proxicloud.app_models import AppCreateRequest, path_vmid
from lightd.compat.proxicloud.app_store import RECORDS, ProxiCloudAppStore
from lightd.compat.proxicloud.creating import create_container
from lightd.compat.proxicloud.node import node_of
from lightd.compat.proxicloud.templates import TemplateCatalogue
from lightd.compat.proxicloud.views import Container, views_of
from lightd.errors import BadRequest, ValidationFailed
from lightd.http import json_response, query_int, read_model

routes = web.RouteTableDef()

METRICS_LIMIT_DEFAULT = 1000
METRICS_LIMIT_MAX = 10_000
POWER = {"start": "started", "stop": "stopped", "reboot": "rebooting"}
"""Verb -> the status the real backend answers with."""


def records_of(request: web.Request) -> ProxiCloudAppStore:
    return request.config_dict[RECORDS]


async def container_items(request: web.Request, containers: list[Container] | None = None) -> list[dict[str, Any]]:
    """`Container[]` (every container by vmid unless given), each with its project."""
    if containers is None:
        containers = await views_of(request).all()
    members = await records_of(request).members()
    name = node_of(request).name
    return [app_views.container(c, name, members.get(c.vmid)) for c in containers]


async def container_item(request: web.Request, vmid: int) -> dict[str, Any]:
    return (await container_items(request, [await views_of(request).one(vmid)]))[0]


# -- health & dashboard -------------------------------------------------------------------------------
@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy"})


@routes.get("/api/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    await require_engine(request)
    return json_response(app_views.dashboard(await container_items(request)))


# -- containers ---------------------------------------------------------------------------------------
@routes.get("/api/containers")
async def list_containers(request: web.Request) -> web.Response:
    await require_engine(request)
    return json_response(await container_items(request))


@routes.post("/api/containers")
async def create(request: web.Request) -> web.Response:
    body = await read_model(request, AppCreateRequest)
    services, node = services_of(request), node_of(request)
    await require_engine(request)
    template = await TemplateCatalogue(services).checked(body.ostemplate)
    within = (body.vmid, body.vmid) if body.vmid is not None else None
    if body.project_id is not None:
        within = await _project_range(request, body.project_id, body.vmid) or within
    vmid, _ = await create_container(services, node, body.hostname, template, body.options(template),
                                     memory_mb=body.memory, cores=body.cores, start=False, within=within)
    if body.project_id is not None:
        await records_of(request).assign(vmid, body.project_id)
    return json_response({"vmid": vmid}, status=201)


async def _project_range(request: web.Request, project_id: str, vmid: int | None) -> tuple[int, int] | None:
    """The vmid range a create in `project_id` draws from (400 for an unknown project, or a chosen vmid
    outside its range); None when the project has no range."""
    project = next((p for p in await records_of(request).projects() if p["id"] == project_id), None)
    if project is None:
        raise ValidationFailed(f"project_id: project '{project_id}' not found")
    start, end = project["fields"].get("container_id_start"), project["fields"].get("container_id_end")
    if start is None or end is None:
        return None
    if vmid is None:
        return start, end
    if not start <= vmid <= end:
        raise ValidationFailed(f"VMID {vmid} is outside project's container ID range {start}-{end}")
    return vmid, vmid


@routes.get("/api/containers/{vmid}")
async def detail(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    return json_response(await container_item(request, vmid))


@routes.post(r"/api/containers/{vmid}/{verb:start|stop|reboot}")
async def power(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    verb = request.match_info["verb"]
    await require_engine(request)
    server = await node_of(request).find(vmid)
    await run_power(services_of(request).servers, "proxicloud_app", verb, server.id, label=f"CT {vmid}")
    return json_response({"status": POWER[verb]})


@routes.delete("/api/containers/{vmid}")
async def delete(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    services, node = services_of(request), node_of(request)
    server = await node.find(vmid)
    await services.servers.delete(server.id)  # its own volume (its rootfs) goes with it
    await node.retire(server.id)
    await records_of(request).container_gone(vmid)
    return json_response({"status": "deleted"})


@routes.post("/api/containers/{vmid}/termproxy")
async def termproxy(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    await require_engine(request)
    container = await views_of(request).one(vmid)
    if container.status != "running":
        raise BadRequest("container must be running to access console")
    # A Proxmox termproxy ticket opens a VNC websocket on the Proxmox host; lightd has none to hand out.
    return json_response({"error": "termproxy is not implemented by lightd: use lightd's console WebSocket "
                                   "(/ws/{id}) for a console"}, status=501)


# -- templates & storage ------------------------------------------------------------------------------
@routes.get("/api/templates")
async def templates(request: web.Request) -> web.Response:
    await require_engine(request)
    return json_response(await app_views.templates(TemplateCatalogue(services_of(request))))


@routes.post("/api/templates/upload")
async def upload_template(request: web.Request) -> web.Response:
    return json_response({"error": "template upload is not implemented by lightd: templates are Docker images, "
                                   "named through docker.image_map"}, status=501)


@routes.get("/api/storage")
async def storage(request: web.Request) -> web.Response:
    if not app_views.storage_matches(request.query, node_of(request).name):
        return json_response([])
    return json_response([app_views.storage(await views_of(request).host())])


# -- metrics ------------------------------------------------------------------------------------------
async def _series(request: web.Request) -> tuple[int, list[dict[str, Any]], int, float, float]:
    vmid = path_vmid(request)
    views = views_of(request)
    container = await views.one(vmid)
    now = time.time()
    since = now - app_views.hours_of(request.query) * 3600
    rows = await node_of(request).store.series(vmid, since, app_views.METRICS_BUCKET_SECONDS)
    return vmid, rows, container.disk_total, since, now


@routes.get("/api/containers/{vmid}/metrics")
async def metrics(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", METRICS_LIMIT_DEFAULT, 1, METRICS_LIMIT_MAX)
    vmid, rows, disk_total, _, _ = await _series(request)
    return json_response(app_views.metrics(vmid, rows, disk_total, limit))


@routes.get("/api/containers/{vmid}/metrics/summary")
async def metrics_summary(request: web.Request) -> web.Response:
    vmid, rows, disk_total, since, now = await _series(request)
    return json_response(app_views.metrics_summary(vmid, rows, disk_total, since, now))
