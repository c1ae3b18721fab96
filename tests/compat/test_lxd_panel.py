"""The LXD panel front end against the real Docker engine, through its own port (as an unmodified panel
client would) and through the /compat/lxd-panel mount on the main port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from lightd import keys
from lightd.app import create_app
from lightd.compat.lxd_panel.views import parse_description
from tests.compat.helpers import FrontEndDaemon, free_port
from tests.servers.helpers import create_server, get, wait_state

DESCRIPTION = "web1 2201 s3cret 30000 30010"


class Panel(FrontEndDaemon):
    """One daemon with the LXD panel front end on its own port."""


@pytest.fixture
def make_panel(serve_front_end: Callable[..., Any]) -> Callable[..., Any]:
    async def make(*, interval: float = 0.5, docker: dict[str, Any] | None = None) -> Panel:
        return await serve_front_end(Panel, "lxd_panel", {"monitor_interval_seconds": interval}, docker=docker)

    return make


@pytest.fixture
async def panel(make_panel: Callable[..., Any], container_prefix: str) -> Panel:
    return await make_panel(docker={"container_prefix": container_prefix})


async def running_instance(panel: Panel, name: str, description: str = DESCRIPTION) -> None:
    await create_server(panel.api, name, description=description)
    status, body = await panel.post(f"/api/instances/{name}/start")
    assert status == 200 and body["success"] is True, body
    await wait_state(panel.api, name, "running")


async def receive_update(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == WSMsgType.TEXT, message
    frame = json.loads(message.data)
    assert frame["type"] == "update" and set(frame["data"]) == {"instances", "host"}
    return frame


def test_description_convention():
    fields = parse_description("web1 2201 s3cret 30000 30010", "web1")
    assert (fields.ssh_port, fields.root_password, fields.nat_ports) == (2201, "s3cret", "30000-30010")
    fields = parse_description("web1 2201 - 0 0", "web1")  # the panel's own form without password or NAT
    assert (fields.ssh_port, fields.root_password, fields.nat_ports) == (2201, None, None)
    nothing = (None, None, None)
    for text in ("web1 22x -", "web1 2201", "web1 ²² pw 0 0", "web1 1 pw 5", "", "web1 2201 pw 1 2 extra",
                 "other 2201 s3cret 30000 30010",  # another instance's name: not the panel's record of this one
                 "web1 2201 s3cret 3x 30010",
                 "LXC Tools: ubuntu:22.04", "ProxiCloud CT 109"):  # other front ends' descriptions
        fields = parse_description(text, "web1")
        assert (fields.ssh_port, fields.root_password, fields.nat_ports) == nothing, text


async def test_other_front_ends_descriptions_are_not_fields(panel: Panel):
    """What LXC Tools and ProxiCloud write as a description is shown as it is, and gives no SSH port, password
    or NAT ports (the real UI showed `ubuntu:22.04` and `109` as root passwords)."""
    await create_server(panel.api, "web1", description=DESCRIPTION)
    for name, description in (("lxc1", "LXC Tools: ubuntu:22.04"), ("pxc1", "ProxiCloud CT 109"), ("bare", "")):
        await create_server(panel.api, name, description=description)
        status, detail = await panel.get(f"/api/instances/{name}")
        assert status == 200, detail
        assert detail["info"]["description"] == description
        assert (detail["ssh_port"], detail["root_password"], detail["nat_ports"]) == (None, None, None)
    status, detail = await panel.get("/api/instances/web1")
    assert (detail["ssh_port"], detail["root_password"], detail["nat_ports"]) == (2201, "s3cret", "30000-30010")


async def test_banner_health_and_host(panel: Panel):
    status, body = await panel.get("/")
    assert status == 200
    assert body["name"] == "LXD管理面板API" and body["version"] == "1.0.0" and body["status"] == "running"
    assert body["timestamp"][:4].isdigit() and "T" in body["timestamp"]
    status, body = await panel.get("/api/health")
    assert (status, body) == (200, {"status": "healthy", "lxd_connected": True})
    status, host = await panel.get("/api/host/info")
    assert status == 200
    assert set(host) == {"cpu_cores", "cpu_percent", "cpu_usage", "memory_total", "memory_used", "memory_percent",
                         "disk_total", "disk_used", "disk_percent"}
    assert host["cpu_usage"] == host["cpu_percent"] and 0 <= host["cpu_percent"] <= 100
    assert host["cpu_cores"] >= 1
    # memory in MB, disk in GB (the seed's units)
    assert 64 <= host["memory_total"] < 64 * 1024 * 1024 and isinstance(host["memory_total"], int)
    assert 0 < host["disk_total"] < 1024 * 1024 and host["disk_used"] <= host["disk_total"]
    status, body = await panel.get("/nope")
    assert (status, body) == (404, {"detail": "Not Found"})


async def test_instance_routes_and_operations(panel: Panel, container_prefix: str):
    await create_server(panel.api, "web1", description=DESCRIPTION, limits={"memory": 256 * 1024 * 1024})
    status, listing = await panel.get("/api/instances")
    assert status == 200
    (info,) = listing
    assert info == {
        "name": "web1", "status": "Stopped", "ipv4": None, "ipv6": None, "architecture": info["architecture"],
        "created_at": info["created_at"], "description": DESCRIPTION,
    }
    assert info["architecture"] and info["created_at"][:2] == "20"

    status, body = await panel.post("/api/instances/web1/start")
    assert (status, body) == (200, {"success": True, "message": "实例 web1 启动成功", "data": None})
    assert (await get(panel.api, "web1"))["state"] == "running"  # the native API sees the same container
    status, body = await panel.post("/api/instances/web1/start")  # already running: the panel's no-op
    assert body["success"] is True

    status, detail = await panel.get("/api/instances/web1")
    assert status == 200
    assert detail["info"]["status"] == "Running" and detail["info"]["ipv4"].count(".") == 3
    assert (detail["ssh_port"], detail["root_password"], detail["nat_ports"]) == (2201, "s3cret", "30000-30010")
    resources = detail["resources"]
    assert set(resources) == {"cpu_percent", "memory_used", "memory_total", "disk_used", "disk_total",
                              "network_rx", "network_tx"}
    assert resources["memory_total"] == 256 and resources["disk_total"] == 10240

    status, resources = await panel.get("/api/instances/web1/resources")
    assert status == 200 and resources["memory_total"] == 256 and 0 <= resources["cpu_percent"] <= 100
    assert all(isinstance(resources[k], int) for k in ("memory_used", "disk_used", "network_rx", "network_tx"))

    # delete without force refuses a running instance, as LXD does: 200 and success false
    status, body = await panel.delete("/api/instances/web1")
    assert status == 200 and body["success"] is False and body["message"].startswith("实例 web1 删除失败")
    assert (await get(panel.api, "web1"))["state"] == "running"
    status, body = await panel.delete("/api/instances/web1", params={"force": "no"})
    assert body["success"] is False

    status, body = await panel.post("/api/instances/web1/restart")
    assert (status, body["success"], body["message"]) == (200, True, "实例 web1 重启成功")
    assert (await get(panel.api, "web1"))["state"] == "running"

    status, body = await panel.post("/api/instances/web1/stop")
    assert (status, body) == (200, {"success": True, "message": "实例 web1 停止成功", "data": None})
    assert (await get(panel.api, "web1"))["state"] == "offline"
    status, listing = await panel.get("/api/instances")
    assert listing[0]["status"] == "Stopped" and listing[0]["ipv4"] is None
    status, resources = await panel.get("/api/instances/web1/resources")
    assert resources["memory_used"] == 0 and resources["cpu_percent"] == 0

    # controlled through the native API, seen by the panel
    status, _ = await panel.api.post("/containers/web1/start")
    assert status == 202
    await wait_state(panel.api, "web1", "running")
    status, detail = await panel.get("/api/instances/web1")
    assert detail["info"]["status"] == "Running"

    status, body = await panel.delete("/api/instances/web1", params={"force": "true"})
    assert (status, body) == (200, {"success": True, "message": "实例 web1 删除成功", "data": None})
    status, _ = await panel.api.get("/containers/web1")
    assert status == 404
    status, listing = await panel.get("/api/instances")
    assert listing == []


async def test_unknown_and_bad_names(panel: Panel):
    for action, verb in (("start", "启动"), ("stop", "停止"), ("restart", "重启")):
        status, body = await panel.post(f"/api/instances/ghost/{action}")
        assert status == 200 and body["success"] is False and body["data"] is None, body
        assert body["message"].startswith(f"实例 ghost {verb}失败")
    status, body = await panel.delete("/api/instances/ghost", params={"force": "true"})
    assert status == 200 and body["success"] is False
    assert await panel.get("/api/instances/ghost") == (404, {"detail": "实例 ghost 不存在"})
    assert await panel.get("/api/instances/ghost/resources") == (404, {"detail": "实例 ghost 不存在"})

    status, body = await panel.delete("/api/instances/ghost", params={"force": "maybe"})
    assert status == 422
    (error,) = body["detail"]
    assert error["loc"] == ["query", "force"] and error["type"] == "bool_parsing" and error["input"] == "maybe"

    for name in ("%3B%20rm%20-rf%20%2F", "..%2Fx", "x" * 300, "%00", "a%20b"):
        url = f"/api/instances/{name}"
        status, body = await panel.call("GET", url)
        assert status == 404 and isinstance(body["detail"], str), (name, body)
        status, body = await panel.call("POST", url + "/start")
        assert status == 200 and body["success"] is False, (name, body)
        status, body = await panel.call("DELETE", url + "?force=true")
        assert status == 200 and body["success"] is False, (name, body)
    # a raw ../ is normalised by the client before it leaves: it lands on no route
    status, body = await panel.get("/api/instances/../x")
    assert status == 404 and "detail" in body


async def test_seed_curl_examples(panel: Panel):
    await create_server(panel.api, "test1", description="test1 20001 password123 30000 30025")

    async def curl(*args: str) -> Any:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--fail-with-body", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, (args, out, err)
        return json.loads(out)

    base = panel.base
    instances = await curl(f"{base}/api/instances")
    assert [i["name"] for i in instances] == ["test1"]
    detail = await curl(f"{base}/api/instances/test1")
    assert detail["ssh_port"] == 20001 and detail["nat_ports"] == "30000-30025"
    assert (await curl("-X", "POST", f"{base}/api/instances/test1/start"))["success"] is True
    assert (await curl("-X", "POST", f"{base}/api/instances/test1/stop"))["success"] is True
    assert (await curl("-X", "DELETE", f"{base}/api/instances/test1?force=true"))["success"] is True
    assert await curl(f"{base}/api/instances") == []


async def test_monitor_pushes_shared_updates(make_panel: Callable[..., Any], container_prefix: str):
    panel = await make_panel(interval=2.0, docker={"container_prefix": container_prefix})
    await running_instance(panel, "web1")
    loop = asyncio.get_running_loop()
    ws = await panel.http.ws_connect(panel.base.replace("http", "ws") + "/ws/monitor")
    started = loop.time()
    first = await receive_update(ws, timeout=1.5)  # immediately, not after the interval
    assert loop.time() - started < 1.5
    (entry,) = first["data"]["instances"]
    assert entry["name"] == "web1" and entry["status"] == "Running"
    assert (entry["ssh_port"], entry["nat_ports"]) == (2201, "30000-30010")
    assert "root_password" not in entry and set(entry["resources"]) >= {"cpu_percent", "memory_used"}
    assert first["data"]["host"]["cpu_cores"] >= 1

    # a second socket shares the same gather: it gets the latest payload at once
    other = await panel.http.ws_connect(panel.base.replace("http", "ws") + "/ws/monitor")
    shared = await receive_update(other, timeout=1.0)
    assert shared == first
    await ws.send_str("ignored")  # incoming messages are ignored

    second = await receive_update(ws, timeout=5)
    assert second["timestamp"] >= first["timestamp"] and second["data"]["instances"][0]["name"] == "web1"
    assert (await receive_update(other, timeout=5)) == second
    await other.close()
    await ws.close()


async def test_monitor_closes_on_shutdown(make_panel: Callable[..., Any], aiohttp_client: Callable[..., Any],
                                          make_config: Callable[..., Any], container_prefix: str):
    config = make_config(docker={"container_prefix": container_prefix},
                         compat={"lxd_panel": {"enabled": True, "port": free_port(), "monitor_interval_seconds": 0.5}})
    client = await aiohttp_client(create_app(config))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"ws://127.0.0.1:{config.compat.lxd_panel.port}/ws/monitor")
        await receive_update(ws, timeout=2)
        await client.close()  # the daemon stops
        message = await ws.receive(timeout=10)
        while message.type == WSMsgType.TEXT:
            message = await ws.receive(timeout=10)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1001), message


async def test_engine_down_is_503(make_panel: Callable[..., Any], tmp_path: Any):
    panel = await make_panel(docker={"socket": f"unix://{tmp_path}/missing/docker.sock", "engine_poll_seconds": 60})
    status, body = await panel.get("/api/health")
    assert (status, body) == (200, {"status": "healthy", "lxd_connected": False})
    for method, path in (("GET", "/api/instances"), ("GET", "/api/instances/x"), ("GET", "/api/instances/x/resources"),
                         ("POST", "/api/instances/x/start"), ("DELETE", "/api/instances/x?force=true")):
        assert await panel.call(method, path) == (503, {"detail": "LXD服务不可用"}), path
    status, host = await panel.get("/api/host/info")
    assert status == 200 and host["cpu_cores"] >= 1
    status, body = await panel.get("/")
    assert status == 200
    async with panel.http.ws_connect(panel.base + "/ws/monitor") as ws:
        update = await receive_update(ws, timeout=2)
        assert update["data"]["instances"] == []


async def test_main_port_mount(panel: Panel, node_token: str):
    await create_server(panel.api, "web1", description=DESCRIPTION)
    bearer = {"Authorization": f"Bearer {node_token}"}  # and no vendor Accept header
    async with panel.main.get("/compat/lxd-panel/api/instances", headers=bearer) as resp:
        assert resp.status == 200
        assert [i["name"] for i in await resp.json()] == ["web1"]
    async with panel.main.get("/compat/lxd-panel/api/instances") as resp:
        assert resp.status == 401
    async with panel.main.get("/compat/lxd-panel/api/instances/ghost", headers=bearer) as resp:
        assert (resp.status, await resp.json()) == (404, {"detail": "实例 ghost 不存在"})
    async with panel.main.post("/compat/lxd-panel/api/instances/web1/start", headers=bearer) as resp:
        assert (await resp.json())["success"] is True
    async with panel.main.get("/compat/lxd-panel/", headers=bearer) as resp:
        assert (await resp.json())["name"] == "LXD管理面板API"
    ws = await panel.main.ws_connect("/compat/lxd-panel/ws/monitor", headers=bearer)
    try:
        first = await receive_update(ws, timeout=2)
        assert [i["name"] for i in first["data"]["instances"]] == ["web1"]
        await receive_update(ws, timeout=3)
    finally:
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await panel.main.ws_connect("/compat/lxd-panel/ws/monitor")
    assert refused.value.status == 401


class StuckSocket:
    """A monitor client whose sends never complete (a peer that stopped reading)."""

    def __init__(self) -> None:
        self.closed = False
        self.close_code: int | None = None
        self.sends = 0

    async def send_str(self, text: str) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    async def close(self, *, code: int, message: bytes = b"") -> None:
        self.closed, self.close_code = True, code


async def test_slow_monitor_client_does_not_hold_back_others(make_panel: Callable[..., Any], tmp_path: Any):
    panel = await make_panel(interval=0.3, docker={"socket": f"unix://{tmp_path}/no.sock", "engine_poll_seconds": 60})
    ws = await panel.http.ws_connect(panel.base.replace("http", "ws") + "/ws/monitor")
    await receive_update(ws, timeout=2)
    hub = panel.main.app[keys.COMPAT_FRONT_ENDS]["lxd_panel"].monitor
    hub.send_timeout = 1.0
    stuck = StuckSocket()
    hub.attach(stuck)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5
    seen = 0
    while loop.time() < deadline:  # updates keep coming to the healthy socket at the interval
        await receive_update(ws, timeout=1)
        seen += 1
    assert seen >= 3
    assert stuck.closed and stuck.close_code == 1013 and stuck.sends == 1
    assert len(hub) == 1
    await ws.close()
