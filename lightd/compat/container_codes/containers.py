"""`/api/containers`: lightd servers in the Container Codes shapes. A container's id and name are its lightd
internal id, so containers made through the native API (or another front end) are listed too."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from lightd.compat.base import KEEPALIVE_COMMAND, CompatServices, services_of
from lightd.compat.container_codes.models import RESTART_POLICIES, ContainerCreate, command_line, iso
from lightd.compat.container_codes.store import STORE, ContainerCodesStore
from lightd.compat.power import run_power
from lightd.errors import Conflict, ValidationFailed
from lightd.http import ascii_int, json_response, query_int, read_model
from lightd.ports import PortSpec
from lightd.servers.events import ServerDeleted, ServerExited
from lightd.servers.models import Mount
from lightd.servers.server import Server

routes = web.RouteTableDef()
STATUS_FILTERS = {"running", "stopped", "exited", "created", "restarting", "dead", "paused"}
FOLLOW_QUEUE = 4096  # lines; the bus drops the oldest for a reader that falls behind


def status_of(server: Server) -> str:
    """Docker-style status (the real project's ContainerStatus values)."""
    if server.install_state == "installing":
        return "created"
    if server.install_state == "failed":
        return "dead"
    if server.state == "paused":
        return "paused"
    if server.state in ("starting", "running", "stopping"):
        return "running"
    return "created" if server.record.get("exit_code") is None else "exited"


AskedImages = dict[str, tuple[str, str]]
"""internal id -> (the image its client asked for, the image lightd runs for it): the front end's record."""


def asked_image(server: Server, asked: AskedImages) -> str:
    """The image the client asked for (`nginx:latest`), while the container still runs the image it was
    mapped to (a PATCH of its image, or a record left by a container deleted elsewhere, do not count)."""
    image, runtime = asked.get(server.id, (server.spec.image, server.spec.image))
    return image if runtime == server.spec.image else server.spec.image


def container_view(server: Server, asked: AskedImages) -> dict[str, Any]:
    stats = server.latest_stats if server.state != "offline" else None
    return {
        "id": server.id,
        "name": server.id,
        "image": asked_image(server, asked),
        "runtime_image": server.spec.image,  # lightd's extension: what runs (docker.image_map)
        "status": status_of(server),
        "created_at": iso(server.record["created_at"]),
        "ports": [f"{p.port}:{p.port}" + ("/udp" if p.protocol == "udp" else "") for p in server.spec.ports],
        "cpu_usage": round(stats.cpu_absolute, 2) if stats else 0.0,
        "memory_usage": stats.memory_bytes if stats else 0,
    }


def container_detail(server: Server, asked: AskedImages) -> dict[str, Any]:
    spec = server.spec
    return {
        **container_view(server, asked),
        "command": spec.startup_command,
        "environment": spec.environment,
        "volumes": {m.target: m.source for m in spec.mount},
        "resources": {"cpu_limit": spec.limits.cpu, "memory_limit": spec.limits.memory},
        "restart_policy": "unless-stopped" if spec.restart_on_crash else "no",
        "exit_code": server.record.get("exit_code"),
        "volume_id": spec.volume_id,
        "uptime_ms": server.uptime_ms(),
    }


def _server(request: web.Request) -> Server:
    return services_of(request).servers.get(request.match_info["id"])


def _store(request: web.Request) -> ContainerCodesStore:
    return request.config_dict[STORE]


def flag_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ValidationFailed(f"{name}: must be true or false", details={"field": name})
    return raw in ("true", "1", "yes")


@routes.get("/api/containers", name="container_list")
async def list_containers(request: web.Request) -> web.Response:
    services = services_of(request)
    status = request.query.get("status")
    if status is not None and status not in STATUS_FILTERS:
        raise ValidationFailed(f"status: must be one of {', '.join(sorted(STATUS_FILTERS))}", details={"field": "status"})
    image = request.query.get("image")
    limit = query_int(request, "limit", 50, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    servers = sorted(services.servers, key=lambda s: s.record["created_at"])
    asked = await _store(request).asked_images()
    views = [container_view(s, asked) for s in servers]
    if status == "stopped":
        views = [v for v in views if v["status"] in ("exited", "created", "dead")]
    elif status is not None:
        views = [v for v in views if v["status"] == status]
    if image is not None:
        views = [v for v in views if v["image"] == image or v["image"].split(":")[0] == image]
    return json_response({"containers": views[offset:offset + limit], "total": len(views), "limit": limit, "offset": offset})


async def _pool_ports(services: CompatServices, mapping: dict[str, str | int]) -> list[PortSpec]:
    """`{"<container port>[/udp]": "<host port>"}` -> pool ports. lightd publishes a pool port at the same
    number inside the container, so both sides must be equal and the port must be free in the pool."""
    specs: list[PortSpec] = []
    for container_side, host_side in mapping.items():
        number, _, protocol = container_side.partition("/")
        protocol = protocol or "tcp"
        host = str(host_side)
        ip, _, host_port = host.rpartition(":")
        if ascii_int(number) is None or ascii_int(host_port) is None or protocol not in ("tcp", "udp"):
            raise ValidationFailed(f"ports: {container_side!r}: {host_side!r} is not '<port>[/udp]': '[ip:]<port>'",
                                   details={"field": "ports"})
        if int(number) != int(host_port):
            raise ValidationFailed(
                f"ports: {container_side} -> {host_port}: lightd publishes a pool port at the same number inside the"
                " container (the process finds it in $SERVER_PORT); use the same number on both sides",
                details={"field": "ports"})
        free = await services.ports.list(ip=ip.strip("[]") or None, protocol=protocol, in_use=False)
        free = [p for p in free if p["port"] == int(host_port)]
        if not free:
            raise Conflict(f"ports: {host} is not a free port of the port pool", details={"field": "ports"})
        free.sort(key=lambda p: p["ip"] != "127.0.0.1")  # loopback first: the reverse proxy can reach it
        specs.append(PortSpec(ip=free[0]["ip"], port=int(host_port), protocol=protocol))
    return specs


async def provision(services: CompatServices, store: ContainerCodesStore, body: ContainerCreate) -> Server:
    """Create (and start) a lightd server from the create body, and record the image it was asked for; on
    failure nothing is left behind."""
    network = services.config.docker.network
    if body.network_mode not in (None, "bridge", "default", network):
        raise ValidationFailed(f"network_mode: containers join the configured network {network!r}",
                               details={"field": "network_mode"})
    image = await services.resolve_image(body.image)
    ports = await _pool_ports(services, body.ports)
    try:
        mounts = [Mount(source=host, target=target, read_only=False) for target, host in body.volumes.items()]
    except ValueError as exc:
        raise ValidationFailed(f"volumes: {exc}", details={"field": "volumes"}) from None
    limits: dict[str, Any] = {}
    if body.resources.memory_limit:
        limits["memory"] = body.resources.memory_limit
    if body.resources.cpu_limit:
        limits["cpu"] = body.resources.cpu_limit
    server = await services.create_in_new_volume({
        "internal_id": body.name, "image": image, "startup_command": command_line(body.command) or KEEPALIVE_COMMAND,
        "environment": body.environment, "ports": [p.model_dump() for p in ports],
        "mount": [m.model_dump() for m in mounts], "limits": limits,
        "restart_on_crash": RESTART_POLICIES[body.restart_policy],
        "description": " ".join(f"{k}={v}" for k, v in body.labels.items())[:1024],
    }, start=body.start)
    await store.remember_image(server.id, body.image, image)
    return server


@routes.post("/api/containers", name="container_create")
async def create_container(request: web.Request) -> web.Response:
    services = services_of(request)
    body = await read_model(request, ContainerCreate)
    store = _store(request)
    server = await services.run_owned(provision(services, store, body), f"container_codes:create:{body.name}")
    return json_response(container_view(server, await store.asked_images()), status=201)


@routes.get("/api/containers/{id}", name="container_get")
async def get_container(request: web.Request) -> web.Response:
    return json_response(container_detail(_server(request), await _store(request).asked_images()))


async def _power(request: web.Request, action: str) -> web.Response:
    services = services_of(request)
    server = _server(request)
    timeout = None
    if action in ("stop", "restart") and "timeout" in request.query:
        timeout = float(query_int(request, "timeout", 30, 0, 3600))
    await services.run_owned(run_power(services.servers, "container_codes", action, server.id, timeout=timeout),
                             f"container_codes:{action}:{server.id}")
    return json_response({"id": server.id, "status": status_of(server)})


@routes.post("/api/containers/{id}/start", name="container_start")
async def start_container(request: web.Request) -> web.Response:
    return await _power(request, "start")


@routes.post("/api/containers/{id}/stop", name="container_stop")
async def stop_container(request: web.Request) -> web.Response:
    return await _power(request, "stop")


@routes.post("/api/containers/{id}/restart", name="container_restart")
async def restart_container(request: web.Request) -> web.Response:
    return await _power(request, "restart")


@routes.post("/api/containers/{id}/pause", name="container_pause")
async def pause_container(request: web.Request) -> web.Response:
    return await _power(request, "pause")


@routes.post("/api/containers/{id}/unpause", name="container_unpause")
async def unpause_container(request: web.Request) -> web.Response:
    return await _power(request, "unpause")


@routes.delete("/api/containers/{id}", name="container_delete")
async def delete_container(request: web.Request) -> web.Response:
    services = services_of(request)
    server = _server(request)
    await services.run_owned(_delete(services, _store(request), server.id), f"container_codes:delete:{server.id}")
    return json_response({"id": server.id, "deleted": True})


async def _delete(services: CompatServices, store: ContainerCodesStore, server_id: str) -> None:
    await services.servers.delete(server_id)
    await store.forget_image(server_id)


@routes.get("/api/containers/{id}/logs", name="container_logs")
async def container_logs(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    server = _server(request)
    tail = query_int(request, "tail", services.config.console.history_lines, 0, 1_000_000)
    follow = flag_query(request, "follow")
    lines = services.servers.logs(server.id, tail) if tail else []
    if not follow:
        return json_response({"id": server.id, "lines": lines, "count": len(lines)})
    # follow: plain text, one line per line, until the container exits or the client leaves.
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    with services.events.subscribe(server=server.id, kinds={"console", "event"}, maxsize=FOLLOW_QUEUE) as events:
        await response.prepare(request)
        if lines:
            await response.write(("\n".join(lines) + "\n").encode())
        if server.state == "offline":
            await response.write_eof()
            return response
        async for event in events:
            if event.kind == "console":
                await response.write(("\n".join(event.data) + "\n").encode())
            elif isinstance(event.data, ServerExited | ServerDeleted):
                break
    await response.write_eof()
    return response


@routes.get("/api/containers/{id}/stats", name="container_stats")
async def container_stats(request: web.Request) -> web.Response:
    server = _server(request)
    stats = server.latest_stats if server.state != "offline" else None
    return json_response({
        "cpu_usage": round(stats.cpu_absolute, 2) if stats else 0.0,
        "memory_usage": stats.memory_bytes if stats else 0,
        "memory_limit": stats.memory_limit_bytes if stats else (server.spec.limits.memory or 0),
        "network_rx": stats.rx_bytes if stats else 0,
        "network_tx": stats.tx_bytes if stats else 0,
        # lightd's sampler does not read block I/O.
        "block_read": None,
        "block_write": None,
        "timestamp": iso(time.time()),
    })
