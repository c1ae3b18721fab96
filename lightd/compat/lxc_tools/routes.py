"""The LXC Tools REST routes: thin translations onto ServerManager, PortPool and the engine.

Each state-changing route runs as one owned task (a client that disconnects does not cut it in half) that
publishes `<operation>_start`, then `_success` or `_error`, on the event bus, and answers after the
terminal step, like the real server. Every route has a name: the error middleware (app.py) uses it to
pick the real server's failure text ("Failed to create container", ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from lightd.compat.base import CompatServices, services_of
from lightd.compat.lxc_tools import models
from lightd.compat.lxc_tools.events import naive_utc, publish_update
from lightd.compat.power import run_power
from lightd.errors import LightdError, NotFound, ValidationFailed
from lightd.http import json_response
from lightd.ports import PortSpec
from lightd.servers.events import ActionFailed, NetworkRebound, StateChanged
from lightd.servers.models import RebindRequest

T = TypeVar("T")
VERSION = "1.0.0"
REBIND_TIMEOUT = 120.0
# The server's user's keys (LXC's root has no counterpart: servers run as docker.user, whose home is the
# volume), so a key deployed here is the one an sshd run by the server would read.
AUTHORIZED_KEYS = "/home/container/.ssh/authorized_keys"
# A fixed command: the keys travel on stdin only, never on a command line.
APPEND_KEYS = ["sh", "-c", "umask 077 && mkdir -p /home/container/.ssh && cat >> /home/container/.ssh/authorized_keys"
               " && chmod 700 /home/container/.ssh && chmod 600 /home/container/.ssh/authorized_keys"]
STATES = {"running": "RUNNING", "starting": "STARTING", "stopping": "STOPPING", "offline": "STOPPED", "paused": "FROZEN"}

routes = web.RouteTableDef()
NAMED = "/api/containers/{name}"


def _name(request: web.Request) -> str:
    return models.check_container_name(request.match_info["name"])


def _failure_text(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LightdError) else "Internal server error"


async def run_operation(
    request: web.Request, operation: str, name: str | None, data: dict[str, Any],
    work: Callable[[], Awaitable[T]], *, error_key: str = "name",
) -> T:
    """Run `work` in an owned task between `<operation>_start` and `_success`/`_error` updates."""
    services = services_of(request)

    async def run() -> T:
        publish_update(services, f"{operation}_start", name, data)
        try:
            result = await work()
        except Exception as exc:
            error = {error_key: data[error_key]} if error_key in data else {}
            publish_update(services, f"{operation}_error", name, {**error, "error": _failure_text(exc)})
            raise
        publish_update(services, f"{operation}_success", name, data)
        return result

    return await services.run_owned(run(), f"lxc_tools:{operation}:{name or '-'}")


async def addresses(services: CompatServices, name: str) -> tuple[str | None, str | None]:
    """The container's IPv4 and global IPv6 address on its Docker network (None when it has none)."""
    return await services.servers.engine.addresses(name)


def lxc_state(view: dict[str, Any]) -> str:
    if view["install_state"] == "failed":
        return "ERROR"
    if view["install_state"] == "installing":
        return "CREATING"
    return STATES.get(view["state"], view["state"].upper())


# -- health and listing -------------------------------------------------------------------------------
@routes.get("/api/health", name="health")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy", "timestamp": naive_utc(time.time()), "version": VERSION})


@routes.get("/api/containers", name="list_containers")
async def list_containers(request: web.Request) -> web.Response:
    services = services_of(request)
    views = await services.servers.list()

    async def row(view: dict[str, Any]) -> dict[str, Any]:
        ipv4 = ipv6 = None
        if view["state"] != "offline":
            try:
                ipv4, ipv6 = await addresses(services, view["internal_id"])
            except LightdError:
                pass
        # The lxc CLI's text: "10.0.3.5 (eth0)".
        return {"name": view["internal_id"], "state": lxc_state(view), "ipv4": f"{ipv4} (eth0)" if ipv4 else "",
                "ipv6": f"{ipv6} (eth0)" if ipv6 else "", "type": "CONTAINER"}

    containers = await asyncio.gather(*(row(v) for v in views))
    return json_response({"containers": containers, "count": len(containers)})


# -- container lifecycle ------------------------------------------------------------------------------
@routes.post("/api/containers", name="create_container")
async def create_container(request: web.Request) -> web.Response:
    name, image = models.parse_create(await models.read_body(request))
    services = services_of(request)
    await run_operation(request, "container_create", name, {"name": name, "image": image},
                        lambda: services.create_and_start(name, image, description=f"LXC Tools: {image}"))
    return json_response({"message": f"Container {name} created successfully", "name": name, "image": image},
                         status=201)


@routes.delete(NAMED, name="delete_container")
async def delete_container(request: web.Request) -> web.Response:
    name = _name(request)
    servers = services_of(request).servers
    await run_operation(request, "container_delete", name, {"name": name}, lambda: servers.delete(name))
    return json_response({"message": f"Container {name} deleted successfully"})


async def _power(request: web.Request, verb: str, done: str) -> web.Response:
    name = _name(request)
    servers = services_of(request).servers
    await run_operation(request, f"container_{verb}", name, {"name": name},
                        lambda: run_power(servers, "lxc_tools", verb, name))
    return json_response({"message": f"Container {name} {done} successfully"})


@routes.post(NAMED + "/restart", name="restart_container")
async def restart_container(request: web.Request) -> web.Response:
    return await _power(request, "restart", "restarted")


@routes.post(NAMED + "/start", name="start_container")
async def start_container(request: web.Request) -> web.Response:
    return await _power(request, "start", "started")


@routes.post(NAMED + "/connect", name="connect_container")
async def connect_container(request: web.Request) -> web.Response:
    name = _name(request)
    services = services_of(request)
    server = services.servers.get(name)
    ipv4, ipv6 = await addresses(services, name)
    docker_name = services.servers.engine.name_of(name)
    return json_response({
        "name": name,
        "ipAddress": ipv4,
        "connectionCommand": f"docker exec -it {docker_name} /bin/sh",
        "sshCommand": f"ssh root@{ipv4}" if ipv4 else None,
        # lightd additions: where the container is published on the host, and how else to reach it.
        "ipv6Address": ipv6,
        "containerName": docker_name,
        "state": lxc_state({"install_state": server.install_state, "state": server.state}),
        "ports": [p.model_dump() for p in server.spec.ports],
        "consoleWebSocket": f"/ws/{name}",
    })


# -- images and network -------------------------------------------------------------------------------
def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.2f}MiB"


@routes.get("/api/images", name="list_images")
async def list_images(request: web.Request) -> web.Response:
    services = services_of(request)
    engine = services.servers.engine
    engine_images = await engine.list_images()
    architecture = (await engine.engine_info()).get("Architecture", "")
    by_tag: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for image in engine_images:
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        for tag in tags or [""]:
            row = {"alias": tag, "fingerprint": str(image.get("Id", "")).rpartition(":")[2][:12], "public": "no",
                   "description": "", "architecture": architecture, "size": _size(int(image.get("Size") or 0))}
            by_tag[tag] = row
            rows.append(row)
    mapped = []
    for alias, target in sorted(services.config.docker.image_map.items()):
        local = by_tag.get(target, {})
        mapped.append({"alias": alias, "fingerprint": local.get("fingerprint", ""), "public": "no",
                       "description": f"lightd image map: runs {target}" + ("" if local else " (not on this host)"),
                       "architecture": architecture, "size": local.get("size", "")})
    images = mapped + sorted(rows, key=lambda r: r["alias"])
    return json_response({"images": images, "count": len(images)})


@routes.post("/api/network/setup", name="setup_network")
async def setup_network(request: web.Request) -> web.Response:
    # Creating a macvlan network needs the host's parent interface and admin intent; lightd reports the
    # Docker network its containers join and refuses when it is missing.
    services = services_of(request)
    network = services.config.docker.network

    async def check() -> None:
        if not await services.servers.engine.network_exists(network):
            raise LightdError(f"Docker network {network!r} does not exist; create it (e.g. `docker network create "
                              f"-d macvlan -o parent=<interface> {network}`) and restart lightd")

    await run_operation(request, "network_setup", None, {}, check)
    note = ("" if network != "bridge" else
            "lightd containers use Docker's default bridge network; configure docker.network for macvlan")
    return json_response({"message": "Network setup completed successfully", "network": network, "note": note})


# -- ssh keys and port forwards -----------------------------------------------------------------------
async def configured_keys(services: CompatServices) -> list[str]:
    """The keys of compat.lxc_tools.authorized_keys_file; 400 when none is configured."""
    path = services.config.compat.lxc_tools.authorized_keys_file  # type: ignore[attr-defined]
    if not path:
        raise ValidationFailed("No SSH key given", details='send {"key": "ssh-ed25519 AAAA... comment"} or '
                               "configure compat.lxc_tools.authorized_keys_file")

    def read() -> str:
        with Path(path).open("rb") as handle:
            return handle.read(models.KEY_FILE_MAX + 1).decode("utf-8", "replace")

    try:
        text = await asyncio.to_thread(read)
    except OSError as exc:
        raise LightdError(f"cannot read the configured authorized_keys file: {exc.strerror}") from None
    if len(text) > models.KEY_FILE_MAX:
        raise LightdError("the configured authorized_keys file is too large")
    keys_ = models.parse_key_file(text)
    if not keys_:
        raise ValidationFailed("No SSH key given", details="the configured authorized_keys file has no key")
    return keys_


async def deploy_keys(services: CompatServices, name: str, keys_: list[str]) -> int:
    """Append the keys the container does not have yet; how many were added."""
    servers = services.servers
    code, current = await servers.exec(name, ["cat", AUTHORIZED_KEYS])
    present = {line.strip() for line in current.splitlines()} if code == 0 else set()
    new = list(dict.fromkeys(k for k in keys_ if k not in present))
    if not new:
        return 0
    separator = "\n" if code == 0 and current and not current.endswith("\n") else ""
    code, output = await servers.exec(name, APPEND_KEYS, stdin=(separator + "\n".join(new) + "\n").encode())
    if code != 0:
        raise LightdError(f"writing {AUTHORIZED_KEYS} failed (exit {code}): {output.strip()[-500:]}")
    return len(new)


@routes.post(NAMED + "/authkey", name="deploy_authkey")
async def deploy_authkey(request: web.Request) -> web.Response:
    name = _name(request)
    services = services_of(request)
    keys_ = models.parse_authkey(await models.read_body(request, optional=True))
    if keys_ is None:
        keys_ = await configured_keys(services)
    added = await run_operation(request, "authkey_deploy", name, {"name": name},
                                lambda: deploy_keys(services, name, keys_))
    return json_response({"message": f"SSH keys deployed to {name} successfully", "added": added, "keys": len(keys_)})


async def _wait_rebind(subscription: Any, was_running: bool) -> None:
    rebound = False
    async for event in subscription:
        match event.data:
            case ActionFailed(action=action, message=message) if action == "rebind" or rebound:
                raise LightdError(f"port change failed: {message}")
            case NetworkRebound():
                rebound = True
                if not was_running:
                    return
            case StateChanged(state="running") if rebound:
                return


async def forward_port(services: CompatServices, name: str, ip: str | None, protocol: str | None) -> PortSpec:
    """Take a free pool port and publish it on the container (recreated; restarted if it was running)."""
    servers = services.servers
    server = servers.get(name)
    try:
        free = await services.ports.random_available(ip=ip, protocol=protocol)
    except NotFound:
        raise LightdError("no free port in the port pool" + (f" for {ip}" if ip else "")
                          + (f"/{protocol}" if protocol else "")) from None
    port = PortSpec(ip=free["ip"], port=free["port"], protocol=free["protocol"])
    with services.events.subscribe(server=name, kinds={"event"}, maxsize=256) as subscription:
        was_running = server.state != "offline"
        await servers.rebind(name, RebindRequest(ports=[*server.spec.ports, port]))
        try:
            await asyncio.wait_for(_wait_rebind(subscription, was_running), REBIND_TIMEOUT)
        except TimeoutError:
            raise LightdError(f"port change of {name} did not finish within {REBIND_TIMEOUT:g}s") from None
    return port


@routes.post(NAMED + "/portforward", name="create_portforward")
async def create_portforward(request: web.Request) -> web.Response:
    name = _name(request)
    rule, ip, protocol = models.parse_portforward(await models.read_body(request))
    services = services_of(request)
    port = await run_operation(request, "portforward_create", name, {"container": name, "rule": rule},
                               lambda: forward_port(services, name, ip, protocol), error_key="container")
    # Docker publishes the pool port on the same port inside the container.
    return json_response({"message": f"Port forward rule {rule} created for {name}", "host_port": port.port,
                          "container_port": port.port, "ip": port.ip, "protocol": port.protocol})
