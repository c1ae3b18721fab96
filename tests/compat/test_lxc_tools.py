"""LXC Tools front end against the real engine, through its own port (as an unmodified client would),
through the /compat/lxc-tools mount on the main port, and over Socket.IO."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import socketio
from aiohttp.test_utils import TestClient

from lightd.app import create_app
from lightd.config import Config
from tests.compat.helpers import free_port
from tests.conftest import TEST_IMAGE, Api, wait_for
from tests.servers.helpers import create_server, get, wait_state

pytestmark = pytest.mark.docker


def ed25519_key(comment: str = "me@host") -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}".strip()


@dataclass
class Lxc:
    """The front end on its own port, plus the main app's test client and native API."""

    base: str
    http: aiohttp.ClientSession
    client: TestClient
    native: Api
    config: Config
    token: str

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if resp.content_type == "application/json" else text

    async def create(self, name: str) -> None:
        status, body = await self.call("POST", "/api/containers", json={"name": name, "image": "ubuntu:20.04"})
        assert status == 201, body

    async def listing(self) -> dict[str, dict[str, Any]]:
        status, body = await self.call("GET", "/api/containers")
        assert status == 200, body
        return {c["name"]: c for c in body["containers"]}


@pytest.fixture
async def lxc(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config], container_prefix: str,
              auth_headers: dict[str, str], node_token: str) -> AsyncIterator[Lxc]:
    port = free_port()
    config = make_config(
        docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0, "image_map": {"ubuntu:20.04": TEST_IMAGE}},
        compat={"lxc_tools": {"enabled": True, "port": port}},
    )
    client = await aiohttp_client(create_app(config))
    http = aiohttp.ClientSession()
    try:
        yield Lxc(f"http://127.0.0.1:{port}", http, client, Api(client, auth_headers), config, node_token)
    finally:
        await http.close()


@dataclass
class SocketClient:
    """A python-socketio client recording every event it receives."""

    sio: socketio.AsyncClient = field(default_factory=lambda: socketio.AsyncClient(reconnection=False))
    received: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sio.on("*", lambda event, data=None: self.received.append((event, data)))

    async def connect(self, url: str, **kwargs: Any) -> None:
        await self.sio.connect(url, wait_timeout=10, **kwargs)

    def updates(self, name: str | None = None) -> list[dict[str, Any]]:
        return [d for e, d in self.received if e == "container_update"
                and (name is None or d["data"].get("name", d["data"].get("container")) == name)]

    def types(self, name: str | None = None) -> list[str]:
        return [u["type"] for u in self.updates(name)]

    async def wait(self, event: str, timeout: float = 60) -> Any:
        return await wait_for(lambda: next((d or True for e, d in self.received if e == event), None), timeout=timeout)

    async def wait_types(self, name: str | None, wanted: list[str], timeout: float = 90) -> None:
        await wait_for(lambda: all(t in self.types(name) for t in wanted), timeout=timeout, interval=0.05)


async def curl(*args: str) -> tuple[int, Any]:
    """Run the real curl (without blocking the loop the server runs on); (HTTP status, JSON body)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-w", "\n%{http_code}", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    body, _, code = out.decode().rpartition("\n")
    return int(code), json.loads(body)


# -- the seed's own examples ---------------------------------------------------------------------------
async def test_seed_curl_examples_work_as_written(lxc: Lxc) -> None:
    base = lxc.base
    status, body = await curl(f"{base}/api/health")
    assert status == 200 and body["status"] == "healthy" and body["version"] == "1.0.0"
    assert "T" in body["timestamp"] and not body["timestamp"].endswith("Z") and "+" not in body["timestamp"]

    status, body = await curl(f"{base}/api/containers")
    assert (status, body) == (200, {"containers": [], "count": 0})

    status, body = await curl("-X", "POST", f"{base}/api/containers", "-H", "Content-Type: application/json",
                              "-d", '{"name": "test-container", "image": "ubuntu:20.04"}')
    assert status == 201, body
    assert body == {"message": "Container test-container created successfully", "name": "test-container",
                    "image": "ubuntu:20.04"}

    status, body = await curl(f"{base}/api/containers")
    assert status == 200 and body["count"] == 1
    row = body["containers"][0]
    assert set(row) == {"name", "state", "ipv4", "ipv6", "type"}
    assert (row["name"], row["state"], row["type"]) == ("test-container", "RUNNING", "CONTAINER")
    assert row["ipv4"].endswith(" (eth0)")

    status, body = await curl("-X", "DELETE", f"{base}/api/containers/test-container")
    assert (status, body) == (200, {"message": "Container test-container deleted successfully"})
    assert (await lxc.native.get("/containers/test-container"))[0] == 404


# -- one lightd container, two APIs ----------------------------------------------------------------------
async def test_container_is_a_native_container_and_every_route_works(lxc: Lxc) -> None:
    await lxc.create("web1")
    native = await get(lxc.native, "web1")
    assert native["image"] == TEST_IMAGE and native["state"] == "running" and native["install_state"] == "ready"
    status, body = await lxc.native.get("/containers")
    assert [c["internal_id"] for c in body["containers"]] == ["web1"]

    status, body = await lxc.call("POST", "/api/containers/web1/connect")
    assert status == 200, body
    assert body["name"] == "web1" and body["ipAddress"] and body["sshCommand"] == f"ssh root@{body['ipAddress']}"
    assert body["connectionCommand"] == f"docker exec -it {native['name']} /bin/sh"
    assert body["ports"] == [] and body["containerName"] == native["name"]

    # Controlled natively, seen by the front end.
    status, body = await lxc.native.post("/containers/web1/stop")
    assert status == 202, body
    await wait_state(lxc.native, "web1", "offline")
    assert (await lxc.listing())["web1"] == {"name": "web1", "state": "STOPPED", "ipv4": "", "ipv6": "", "type": "CONTAINER"}

    status, body = await lxc.call("POST", "/api/containers/web1/start")
    assert (status, body) == (200, {"message": "Container web1 started successfully"})
    assert (await lxc.listing())["web1"]["state"] == "RUNNING"
    status, body = await lxc.call("POST", "/api/containers/web1/start")
    assert status == 409 and body["error"] == "Failed to start container" and "already" in body["details"]

    # Restart keeps the data (the real tool re-creates the container).
    wrote = subprocess.run(["docker", "exec", native["name"], "sh", "-c", "echo kept > /home/container/marker"],
                           capture_output=True)
    assert wrote.returncode == 0, wrote.stderr
    status, body = await lxc.call("POST", "/api/containers/web1/restart")
    assert (status, body) == (200, {"message": "Container web1 restarted successfully"})
    assert (await get(lxc.native, "web1"))["state"] == "running"
    marker = subprocess.run(["docker", "exec", native["name"], "cat", "/home/container/marker"], capture_output=True, text=True)
    assert marker.stdout.strip() == "kept"

    status, body = await lxc.call("POST", "/api/containers", json={"name": "web1", "image": "ubuntu:20.04"})
    assert status == 409 and body["error"] == "Failed to create container" and "already exists" in body["details"]

    status, body = await lxc.call("DELETE", "/api/containers/web1")
    assert (status, body) == (200, {"message": "Container web1 deleted successfully"})
    assert (await lxc.native.get("/containers/web1"))[0] == 404
    assert subprocess.run(["docker", "inspect", native["name"]], capture_output=True).returncode != 0


async def test_unknown_container_is_404_with_error_and_details(lxc: Lxc) -> None:
    for method, path, kwargs in [
        ("DELETE", "/api/containers/ghost", {}),
        ("POST", "/api/containers/ghost/restart", {}),
        ("POST", "/api/containers/ghost/start", {}),
        ("POST", "/api/containers/ghost/connect", {}),
        ("POST", "/api/containers/ghost/authkey", {"json": {"key": ed25519_key()}}),
        ("POST", "/api/containers/ghost/portforward", {"json": {"name": "web"}}),
    ]:
        status, body = await lxc.call(method, path, **kwargs)
        assert status == 404, (path, body)
        assert body["error"].startswith("Failed to") and "ghost" in body["details"], body


# -- validation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["; rm -rf /", "../x", "x" * 300, "x²", "", "--", "a b", "$(id)", "x/y", 5])
async def test_bad_names_are_refused_with_400(lxc: Lxc, name: Any) -> None:
    status, body = await lxc.call("POST", "/api/containers", json={"name": name, "image": "ubuntu:20.04"})
    assert status == 400, body
    assert body["error"] in ("Invalid container name", "Missing required fields: image, name")
    if isinstance(name, str) and name:
        # Percent-encoded, so '/' and '..' reach the {name} segment instead of being normalised away.
        status, body = await lxc.call("DELETE", "/api/containers/" + quote(name, safe=""))
        assert status == 400 and body["error"] == "Invalid container name", (name, body)
    assert (await lxc.native.get("/containers"))[1]["count"] == 0


async def test_bad_bodies_and_images_are_400(lxc: Lxc) -> None:
    cases = [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "Invalid JSON"),
        ({"data": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, "Invalid JSON"),
        ({}, "Request body must be JSON"),
        ({"json": {"name": "ok"}}, "Missing required fields: image, name"),
        ({"json": {"name": "ok", "image": "ubuntu"}}, "Invalid image name"),
        ({"json": {"name": "ok", "image": "ubuntu:20.04; reboot"}}, "Invalid image name"),
    ]
    for kwargs, error in cases:
        status, body = await lxc.call("POST", "/api/containers", **kwargs)
        assert status == 400 and body["error"] == error, (kwargs, body)
    status, body = await lxc.call("POST", "/api/containers", json={"name": "ok", "image": "centos:7"})
    assert status == 400 and "Unknown image" in body["error"], body
    assert (await lxc.native.get("/containers"))[1]["count"] == 0
    status, body = await lxc.call("GET", "/api/nothing-here")
    assert status == 404 and "error" in body


# -- images and network -----------------------------------------------------------------------------------
async def test_images_lists_engine_images_and_mappings(lxc: Lxc) -> None:
    status, body = await lxc.call("GET", "/api/images")
    assert status == 200, body
    assert body["count"] == len(body["images"]) >= 2
    by_alias = {i["alias"]: i for i in body["images"]}
    for image in body["images"]:
        assert set(image) == {"alias", "fingerprint", "public", "description", "architecture", "size"}
    assert by_alias["ubuntu:20.04"]["fingerprint"] == by_alias[TEST_IMAGE]["fingerprint"] != ""
    assert TEST_IMAGE in by_alias["ubuntu:20.04"]["description"]
    assert by_alias[TEST_IMAGE]["size"].endswith("MiB")


async def test_network_setup_reports_the_bridge_and_refuses_a_missing_network(lxc: Lxc) -> None:
    status, body = await lxc.call("POST", "/api/network/setup")
    assert status == 200, body
    assert body["message"] == "Network setup completed successfully" and body["network"] == "bridge"
    lxc.config.docker.network = "lightd-test-no-such-network"
    try:
        status, body = await lxc.call("POST", "/api/network/setup")
    finally:
        lxc.config.docker.network = "bridge"
    assert status == 500 and body["error"] == "Failed to setup network"
    assert "lightd-test-no-such-network" in body["details"]


# -- Socket.IO ----------------------------------------------------------------------------------------------
async def test_socketio_reports_native_and_front_end_operations(lxc: Lxc) -> None:
    client = SocketClient()
    await client.connect(lxc.base)
    try:
        assert await client.wait("connected") == {"message": "Connected to LXC API Server"}
        await client.sio.emit("join_room", {"room": "ops"})
        assert await client.wait("joined_room") == {"room": "ops"}

        # A container made over the NATIVE API is announced like one made here.
        await create_server(lxc.native, "nat1", ready=False)
        await client.wait_types("nat1", ["container_create_start", "container_create_success"])
        updates = client.updates("nat1")
        assert [u["type"] for u in updates][:2] == ["container_create_start", "container_create_success"]
        assert updates[0]["data"] == {"name": "nat1", "image": TEST_IMAGE}
        assert "T" in updates[0]["timestamp"] and set(updates[0]) == {"type", "data", "timestamp"}

        # One made here is announced once, not twice (its native events are folded into its own steps).
        await lxc.create("fe1")
        await lxc.call("POST", "/api/containers/fe1/restart")
        status, _ = await lxc.call("DELETE", "/api/containers/fe1")
        assert status == 200
        await client.wait_types("fe1", ["container_delete_success"])
        assert client.types("fe1") == [
            "container_create_start", "container_create_success",
            "container_restart_start", "container_restart_success",
            "container_delete_start", "container_delete_success",
        ]
        assert client.updates("fe1")[0]["data"] == {"name": "fe1", "image": "ubuntu:20.04"}

        status, _ = await lxc.call("POST", "/api/containers/ghost/restart")
        assert status == 404
        await client.wait_types("ghost", ["container_restart_error"])
        assert "ghost" in client.updates("ghost")[-1]["data"]["error"]

        await client.sio.emit("leave_room", {"room": "ops"})
        assert await client.wait("left_room") == {"room": "ops"}
    finally:
        await client.sio.disconnect()


# -- the mount on the main port -------------------------------------------------------------------------------
async def test_mount_on_main_port_needs_the_node_token_only(lxc: Lxc) -> None:
    status, body = await lxc.native.call("GET", "/compat/lxc-tools/api/health", headers={"Authorization": "", "Accept": ""})
    assert status == 401, body
    bearer = {"Authorization": f"Bearer {lxc.token}"}
    async with lxc.client.get("/compat/lxc-tools/api/health", headers=bearer) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "healthy"
    async with lxc.client.post("/compat/lxc-tools/api/containers", headers=bearer, data=b"{bad") as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "Invalid JSON"

    url = str(lxc.client.make_url("/")).rstrip("/")
    refused = SocketClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(url, socketio_path="compat/lxc-tools/socket.io")
    client = SocketClient()
    await client.connect(url, socketio_path="compat/lxc-tools/socket.io", headers=bearer)
    try:
        assert await client.wait("connected") == {"message": "Connected to LXC API Server"}
        async with lxc.client.post("/compat/lxc-tools/api/network/setup", headers=bearer) as resp:
            assert resp.status == 200
        await wait_for(lambda: client.types() == ["network_setup_start", "network_setup_success"], timeout=10)
        assert client.updates()[0]["data"] == {}
    finally:
        await client.sio.disconnect()


# -- ssh keys ---------------------------------------------------------------------------------------------
async def test_authkey_deploys_keys_without_a_shell_and_refuses_bad_ones(lxc: Lxc, tmp_path: Path) -> None:
    await lxc.create("keys1")
    docker_name = (await get(lxc.native, "keys1"))["name"]

    def authorized() -> list[str]:
        out = subprocess.run(["docker", "exec", docker_name, "cat", "/home/container/.ssh/authorized_keys"],
                             capture_output=True, text=True)
        return out.stdout.splitlines()

    first, second = ed25519_key("alice@laptop"), ed25519_key("")
    status, body = await lxc.call("POST", "/api/containers/keys1/authkey", json={"key": first})
    assert status == 200 and body["message"] == "SSH keys deployed to keys1 successfully", body
    assert authorized() == [first]
    status, body = await lxc.call("POST", "/api/containers/keys1/authkey", json={"keys": [first, second]})
    assert status == 200 and body["added"] == 1
    assert authorized() == [first, second]

    blob = base64.b64decode(first.split()[1])
    mismatched = "ssh-rsa " + base64.b64encode(blob).decode()
    for bad in [
        "ssh-ed25519 not-base64!!",
        mismatched,
        first + "\nssh-ed25519 AAAA injected",
        'command="/bin/sh" ' + first,
        "ssh-dss " + first.split()[1],
        "ssh-ed25519 " + base64.b64encode(blob[:15]).decode(),
        "",
        42,
    ]:
        status, body = await lxc.call("POST", "/api/containers/keys1/authkey", json={"key": bad})
        assert status == 400 and body["error"] == "Invalid SSH public key", (bad, body)
    assert authorized() == [first, second]

    # No body, as the real clients send: the configured key file, else 400.
    status, body = await lxc.call("POST", "/api/containers/keys1/authkey")
    assert status == 400 and body["error"] == "No SSH key given"
    key_file = tmp_path / "authorized_keys"
    third = ed25519_key("from-file")
    key_file.write_text(f"# host keys\n\n{third}\n")
    lxc.config.compat.lxc_tools.authorized_keys_file = str(key_file)
    status, body = await lxc.call("POST", "/api/containers/keys1/authkey")
    assert status == 200 and body["added"] == 1, body
    assert authorized() == [first, second, third]

    await lxc.native.post("/containers/keys1/stop")
    await wait_state(lxc.native, "keys1", "offline")
    status, body = await lxc.call("POST", "/api/containers/keys1/authkey", json={"key": first})
    assert status == 409 and body["error"] == "Failed to deploy SSH keys" and "not running" in body["details"]


# -- port forwards ------------------------------------------------------------------------------------------
async def test_portforward_publishes_a_free_pool_port(lxc: Lxc) -> None:
    await lxc.create("pf1")
    status, body = await lxc.call("POST", "/api/containers/pf1/portforward", json={"name": "web"})
    assert status == 500 and body["error"] == "Failed to create port forward" and "no free port" in body["details"]

    port = free_port()
    status, body = await lxc.native.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    assert status == 201, body
    for payload, error in [({}, "Missing required field: name"), ({"name": "a;b"}, "Invalid rule name"),
                           ({"name": "web", "protocol": "sctp"}, "Invalid protocol")]:
        status, body = await lxc.call("POST", "/api/containers/pf1/portforward", json=payload)
        assert status == 400 and body["error"] == error, body

    status, body = await lxc.call("POST", "/api/containers/pf1/portforward", json={"name": "web"})
    assert status == 200, body
    assert body == {"message": "Port forward rule web created for pf1", "host_port": port, "container_port": port,
                    "ip": "127.0.0.1", "protocol": "tcp"}
    native = await get(lxc.native, "pf1")
    assert native["ports"] == [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}]
    assert native["state"] == "running"
    published = subprocess.run(["docker", "port", native["name"]], capture_output=True, text=True).stdout
    assert f"127.0.0.1:{port}" in published
    status, body = await lxc.call("POST", "/api/containers/pf1/connect")
    assert body["ports"] == [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}]
    ports = (await lxc.native.get(f"/network/ports/127.0.0.1/{port}"))[1]
    assert ports["in_use"] and ports["container"] == "pf1"


async def test_own_port_with_require_token(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config],
                                           container_prefix: str, node_token: str) -> None:
    port = free_port()
    config = make_config(docker={"container_prefix": container_prefix},
                         compat={"lxc_tools": {"enabled": True, "port": port, "require_token": True}})
    await aiohttp_client(create_app(config))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/api/health") as resp:
            assert resp.status == 401 and "error" in await resp.json()
        headers = {"Authorization": f"Bearer {node_token}"}
        async with http.get(f"http://127.0.0.1:{port}/api/containers", headers=headers) as resp:
            assert resp.status == 200 and await resp.json() == {"containers": [], "count": 0}
    sock = SocketClient()
    await sock.connect(f"http://127.0.0.1:{port}", headers=headers)
    assert await sock.wait("connected")
    await sock.sio.disconnect()


async def test_shutdown_is_bounded_with_a_polling_client_that_went_away(
    aiohttp_client: Callable[..., Any], make_config: Callable[..., Config], container_prefix: str,
) -> None:
    """An engine.io polling session whose client stopped polling must not hold the daemon's shutdown:
    engine.io's disconnect waits for the client to collect the close packet, which it never does."""
    from lightd.compat.lxc_tools import app as lxc_app

    port = free_port()
    config = make_config(docker={"container_prefix": container_prefix},
                         compat={"lxc_tools": {"enabled": True, "port": port}})
    client = await aiohttp_client(create_app(config))
    base = f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(base) as response:  # the engine.io handshake: `0{"sid": ...}`
            text = await response.text()
        sid = json.loads(text[1:])["sid"]
        async with http.post(f"{base}&sid={sid}", data="40") as response:  # the Socket.IO connect
            assert response.status == 200
    # ... and the client never polls again.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.close()
    assert loop.time() - started < lxc_app.SHUTDOWN_TIMEOUT + 10
