"""ProxiCloud web app projects: records in the front end's own store (app_store.py), a project's containers by
vmid. A project's `network` is kept as given (lightd makes no Proxmox SDN zone or VNet for it); its vmid
range is where a create in the project draws its vmid from, as the real backend does."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from aiohttp import web

from lightd.compat.proxicloud.app_models import AssignRequest, ProjectRequest, path_vmid
from lightd.compat.proxicloud.app_routes import container_items, records_of
from lightd.compat.proxicloud.node import node_of
from lightd.errors import Conflict, NotFound, ValidationFailed
from lightd.http import json_response, read_model

routes = web.RouteTableDef()

FIELDS = ("description", "tags", "network", "container_id_start", "container_id_end")
MIB = 1024 * 1024


def _view(row: dict[str, Any], count: int) -> dict[str, Any]:
    """A `Project` (unset fields left out, as the Go backend's omitempty does)."""
    fields = {k: v for k, v in row["fields"].items() if v not in (None, "", [], {})}
    return {"id": row["id"], "name": row["name"], **fields, "container_count": count,
            "created_at": int(row["created_at"]), "updated_at": int(row["updated_at"])}


async def _live_members(request: web.Request) -> dict[int, str]:
    live = {vmid for vmid, _ in await node_of(request).sync()}
    return {vmid: pid for vmid, pid in (await records_of(request).members()).items() if vmid in live}


async def _find(request: web.Request, project_id: str) -> dict[str, Any]:
    project = next((p for p in await records_of(request).projects() if p["id"] == project_id), None)
    if project is None:
        raise NotFound("project not found")
    return project


def _check(fields: dict[str, Any], project_id: str | None, others: list[dict[str, Any]]) -> None:
    """The real backend's checks: a range given whole, at 100 or above, overlapping no other project's; a
    subnet with a gateway inside it. 400 otherwise."""
    start, end = fields.get("container_id_start"), fields.get("container_id_end")
    if (start is None) != (end is None):
        raise ValidationFailed("both container_id_start and container_id_end must be provided together")
    if start is not None and end is not None:
        if start > end:
            raise ValidationFailed(f"container_id_start ({start}) must be less than or equal to container_id_end ({end})")
        for other in others:
            o_start, o_end = other["fields"].get("container_id_start"), other["fields"].get("container_id_end")
            if other["id"] != project_id and o_start is not None and o_end is not None and start <= o_end and o_start <= end:
                raise ValidationFailed(f"container ID range {start}-{end} overlaps with project '{other['name']}' range"
                                       f" {o_start}-{o_end}")
    network = fields.get("network") or {}
    if network.get("subnet"):
        if not network.get("gateway"):
            raise ValidationFailed("gateway is required when subnet is specified")
        if ipaddress.ip_address(network["gateway"]) not in ipaddress.ip_network(network["subnet"]):
            raise ValidationFailed(f"gateway validation failed: {network['gateway']} is not in {network['subnet']}")


def _name_free(name: str, project_id: str | None, others: list[dict[str, Any]]) -> None:
    if any(p["name"] == name and p["id"] != project_id for p in others):
        raise Conflict(f"project with name '{name}' already exists")


@routes.get("/api/projects")
async def list_projects(request: web.Request) -> web.Response:
    members = list((await _live_members(request)).values())
    return json_response([_view(p, members.count(p["id"])) for p in await records_of(request).projects()])


@routes.post("/api/projects")
async def create_project(request: web.Request) -> web.Response:
    body = await read_model(request, ProjectRequest)
    if not body.name:
        raise ValidationFailed("name is required")
    records = records_of(request)
    projects = await records.projects()
    fields = body.model_dump(include=set(FIELDS), exclude_none=True)
    _check(fields, None, projects)
    _name_free(body.name, None, projects)
    project_id = secrets.token_hex(16)
    await records.add_project(project_id, body.name, fields)
    return json_response(_view(await _find(request, project_id), 0), status=201)


@routes.get("/api/projects/{id}")
async def get_project(request: web.Request) -> web.Response:
    project = await _find(request, request.match_info["id"])
    members = list((await _live_members(request)).values())
    return json_response(_view(project, members.count(project["id"])))


@routes.put("/api/projects/{id}")
async def update_project(request: web.Request) -> web.Response:
    project = await _find(request, request.match_info["id"])
    body = await read_model(request, ProjectRequest)
    records = records_of(request)
    # As the real backend: a field given (and not empty) replaces the project's, the others stay.
    changes = {k: v for k, v in body.model_dump(include=set(FIELDS), exclude_none=True).items() if v != ""}
    fields = {**project["fields"], **changes}
    projects = await records.projects()
    _check(fields, project["id"], projects)
    name = body.name or project["name"]
    _name_free(name, project["id"], projects)
    await records.update_project(project["id"], name, fields)
    members = list((await _live_members(request)).values())
    return json_response(_view(await _find(request, project["id"]), members.count(project["id"])))


@routes.delete("/api/projects/{id}")
async def delete_project(request: web.Request) -> web.Response:
    project = await _find(request, request.match_info["id"])
    active = sum(1 for pid in (await _live_members(request)).values() if pid == project["id"])
    if active:
        raise Conflict(f"cannot delete project: {active} container(s) still assigned. "
                       "Please delete or reassign containers first.")
    await records_of(request).delete_project(project["id"])  # stale members (deleted containers) go too
    return json_response({"status": "deleted"})


@routes.get("/api/projects/{id}/containers")
async def project_containers(request: web.Request) -> web.Response:
    project = await _find(request, request.match_info["id"])
    items = [c for c in await container_items(request) if c.get("project_id") == project["id"]]
    running = sum(1 for c in items if c["status"] == "running")
    cores = {vmid: node_of(request).options_of(server.id).get("cores") for vmid, server in await node_of(request).sync()}
    return json_response({
        "project": _view(project, len(items)),
        "containers": items,
        "aggregate": {
            "total_containers": len(items), "running": running, "stopped": len(items) - running,
            "total_cpu_cores": sum(int(cores.get(c["vmid"]) or 0) for c in items),
            "total_memory_mb": sum(c["maxmem"] for c in items) // MIB,
            "used_memory_mb": sum(c["mem"] for c in items) // MIB,
        },
    })


@routes.post("/api/containers/{vmid}/project")
async def assign_project(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    body = await read_model(request, AssignRequest)
    try:
        await node_of(request).find(vmid)
    except NotFound:
        raise NotFound("container not found") from None
    if body.project_id:
        await _find(request, body.project_id)
    await records_of(request).assign(vmid, body.project_id or None)
    return json_response({"status": "assigned"})
