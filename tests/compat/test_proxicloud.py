"""The ProxiCloud front end against the real Docker engine, through its own port (as an unmodified
ProxiCloud client would) and through the /compat/proxicloud mount on the main port."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from lightd import keys
from lightd.app import create_app
from lightd.compat.proxicloud import analytics
from lightd.compat.proxicloud.node import ProxiCloudNode
from lightd.compat.proxicloud.store import ProxiCloudStore
from lightd.compat.proxicloud.templates import template_id
from lightd.store import Store
from tests.compat.helpers import FrontEndDaemon
from tests.conftest import REGISTRY, TEST_IMAGE, Api, wait_for
from tests.servers.helpers import create_server, get, wait_state

TEMPLATE = "ubuntu-24.04-standard"
IMAGE_MAP = {TEMPLATE: TEST_IMAGE, "broken-1.0": f"{REGISTRY}/lightd-test/does-not-exist:1"}


class Cloud(FrontEndDaemon):
    """One daemon with the ProxiCloud front end on its own port."""

    async def read(self, resp: aiohttp.ClientResponse) -> Any:
        assert resp.headers.get("X-Cache-Status") in ("online", "offline"), (str(resp.url), dict(resp.headers))
        return await resp.json(content_type=None)

    async def create(self, **body: Any) -> dict[str, Any]:
        status, answer = await self.post("/api/containers", json={"template": TEMPLATE, **body})
        assert status == 201, answer
        return answer

    def node(self) -> ProxiCloudNode:
        """The daemon's one ProxiCloud node (both ports serve it)."""
        return self.main.app[keys.COMPAT_FRONT_ENDS]["proxicloud"].node


@pytest.fixture
def fast_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics, "SAMPLE_INTERVAL_SECONDS", 0.2)


@pytest.fixture
def make_cloud(serve_front_end: Callable[..., Any], container_prefix: str) -> Callable[..., Any]:
    async def make(*, docker: dict[str, Any] | None = None, mount_on_main: bool = True) -> Cloud:
        return await serve_front_end(Cloud, "proxicloud", mount_on_main=mount_on_main,
                                     docker={"container_prefix": container_prefix, "image_map": IMAGE_MAP, **(docker or {})})

    return make


@pytest.fixture
async def cloud(make_cloud: Callable[..., Any]) -> Cloud:
    return await make_cloud()


async def activity(cloud: Cloud) -> list[dict[str, Any]]:
    status, body = await cloud.get("/api/dashboard/summary")
    assert status == 200, body
    return body["recent_activity"]


async def wait_activity(cloud: Cloud, action: str, vmid: int) -> dict[str, Any]:
    async def seen() -> Any:
        return next((a for a in await activity(cloud) if a["action"] == action and a["vmid"] == vmid), None)

    return await wait_for(seen, timeout=20)


def proxicloud_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("proxicloud:") and not t.done()]


async def test_store_vmids_and_activity(tmp_path: Any):
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    store = ProxiCloudStore(lambda: core)
    try:
        assert await store.assign_vmid("a", {"cores": 2}, 100) == (100, True)
        assert await store.assign_vmid("a", {}, 100) == (100, False)
        assert await store.assign_vmid("b", {}, 100) == (101, True)
        await store.add_samples([(101, time.time(), 1.0, 2, 4, 0, 0, 0)])
        assert await store.retire_vmid("b") == 101
        assert await store.retire_vmid("b") is None
        assert await store.series(101, 0, 60) == []  # its samples went with it
        assert await store.assign_vmid("b", {}, 100) == (102, True)  # never reused
        assert [(r["vmid"], r["server"], r["options"]) for r in await store.vmids()] == [
            (100, "a", {"cores": 2}), (102, "b", {})]
        for n in range(5):
            await store.add_activity("start", 100, "a", f"#{n}", keep=3)
        assert [r["details"] for r in await store.activity(10)] == ["#4", "#3", "#2"]
    finally:
        await core.close()


def test_template_ids():
    assert template_id("local:vztmpl/ubuntu-24.04-standard_24.04-1_amd64.tar.zst") == TEMPLATE
    assert template_id(TEMPLATE) == TEMPLATE
    assert template_id("lightd-test/busybox:latest") == "lightd-test/busybox:latest"


async def test_health_info_and_templates(cloud: Cloud):
    async with cloud.http.get(cloud.base + "/api/health") as resp:
        assert resp.status == 200 and resp.headers["X-Cache-Status"] == "online"
        body = await resp.json()
    assert body == {"status": "healthy", "proxmox_connected": True, "database_connected": True,
                    "timestamp": body["timestamp"]}
    assert abs(body["timestamp"] - time.time()) < 5

    status, info = await cloud.get("/api/info")
    assert status == 200 and info["proxicloud_version"] == "1.0.0" and info["cpu_cores"] >= 1
    assert info["node_name"] and info["version"] and info["total_memory"] > 0 and info["uptime"] > 0

    status, featured = await cloud.get("/api/templates")
    assert status == 200 and featured["total"] == len(featured["templates"]) == 5
    ubuntu = next(t for t in featured["templates"] if t["id"] == TEMPLATE)
    assert ubuntu == {"id": TEMPLATE, "name": "Ubuntu 24.04 LTS", "description": "Ubuntu 24.04 Noble Numbat (LTS)",
                      "distribution": "ubuntu", "version": "24.04", "featured": True, "size": ubuntu["size"],
                      "available": True}
    assert ubuntu["size"] > 0
    assert not next(t for t in featured["templates"] if t["id"] == "debian-12-standard")["available"]

    status, every = await cloud.get("/api/templates/all")
    assert status == 200 and every["total"] == len(every["templates"]) > 5
    local = next(t for t in every["templates"] if t["id"] == TEST_IMAGE)
    assert (local["featured"], local["available"], local["distribution"], local["version"]) == (False, True, "busybox", "latest")

    status, detail = await cloud.get(f"/api/templates/{TEMPLATE}/info")
    assert status == 200 and detail["path"] == TEST_IMAGE and detail["storage"] == "local"
    assert detail["checksum"].startswith("sha256:") and detail["architecture"] and detail["available"] is True
    status, detail = await cloud.get("/api/templates/lightd-test%2Fbusybox:latest/info")
    assert status == 200 and detail["id"] == TEST_IMAGE, detail
    assert await cloud.get("/api/templates/nope-1.0/info") == (404, {"success": False, "error": "Template 'nope-1.0' not found"})

    assert await cloud.get("/api/nothing") == (404, {"success": False, "error": "Not Found"})
    status, body = await cloud.call("PUT", "/api/health")
    assert status == 405 and body["success"] is False


async def test_create_power_delete_and_vmids_survive_a_restart(
    make_cloud: Callable[..., Any], aiohttp_client: Callable[..., Any], auth_headers: dict[str, str],
):
    cloud = await make_cloud()
    assert await cloud.get("/api/containers/generate-name") == (200, {"name": "proxicloud-001", "counter": 1})
    created = await cloud.create(hostname="web-01", cores=1, memory=128, start=True)
    assert created["success"] is True and created["vmid"] == 100 and created["name"] == "web-01"
    assert created["status"] == "running"
    parts = created["task_id"].split(":")
    assert len(parts) == 9 and parts[0] == "UPID" and parts[5] == "vzcreate" and parts[6] == "100" and parts[8] == ""
    native = await get(cloud.api, "web-01")  # the same container, seen by the native API
    assert native["state"] == "running" and native["limits"]["memory"] == 128 * 1024 * 1024

    # a second one without a hostname: the generated name, the next vmid, not started
    second = await cloud.create()
    assert (second["vmid"], second["name"], second["status"]) == (101, "proxicloud-001", "stopped")
    assert (await cloud.get("/api/containers/generate-name"))[1] == {"name": "proxicloud-002", "counter": 2}

    status, listing = await cloud.get("/api/containers")
    assert status == 200 and (listing["total"], listing["running"], listing["stopped"]) == (2, 1, 1)
    first = listing["containers"][0]
    assert set(first) == {"vmid", "name", "status", "template", "cpu", "memory", "disk", "uptime", "cpu_usage",
                          "memory_usage", "network_in", "network_out", "ip_address"}
    assert (first["vmid"], first["name"], first["status"], first["template"]) == (100, "web-01", "running", TEMPLATE)
    assert (first["cpu"], first["memory"], first["disk"]) == (1, 128, 9 * 1024**3)
    assert first["ip_address"].count(".") == 3 and 0 <= first["cpu_usage"] <= 100
    assert listing["containers"][1]["ip_address"] is None and listing["containers"][1]["memory"] == 1024

    status, detail = await cloud.get("/api/containers/100")
    assert status == 200
    assert detail["config"] == {"cores": 1, "memory": 128, "swap": 512, "rootfs": "local-lvm:vm-100-disk-0,size=9G",
                                "net0": "name=eth0,bridge=vmbr0,ip=dhcp", "onboot": True,
                                "features": "keyctl=0,nesting=0"}
    current = detail["current"]
    assert current["status"] == "running" and current["memory_total"] == 128 * 1024 * 1024
    assert current["disk_total"] == 9 * 1024**3 and set(current["network"]) == {"in", "out"}
    assert detail["created_at"] <= time.time() and detail["ip_address"] == first["ip_address"]
    status, body = await cloud.get("/api/containers/100/status")
    assert status == 200 and body["vmid"] == 100 and body["status"] == "running" and body["uptime"] >= 0

    # power: answered at once as Proxmox tasks, done in the background
    status, body = await cloud.post("/api/containers/100/stop", params={"timeout": "5"})
    assert status == 200 and (body["success"], body["vmid"], body["status"]) == (True, 100, "stopping")
    assert body["task_id"].split(":")[5] == "vzshutdown"
    await wait_state(cloud.api, "web-01", "offline")
    status, body = await cloud.post("/api/containers/100/stop")  # already stopped
    assert status == 409 and body["success"] is False
    status, body = await cloud.post("/api/containers/100/reboot")  # not running
    assert status == 409 and body["success"] is False
    status, body = await cloud.post("/api/containers/100/start")
    assert status == 200 and body["status"] == "starting" and body["task_id"].split(":")[5] == "vzstart"
    await wait_state(cloud.api, "web-01", "running")
    status, body = await cloud.post("/api/containers/100/reboot")
    assert status == 200 and body["status"] == "rebooting"
    await wait_state(cloud.api, "web-01", "running")
    status, body = await cloud.post("/api/containers/100/stop", params={"force": "true"})
    assert status == 200 and body["task_id"].split(":")[5] == "vzstop"
    await wait_state(cloud.api, "web-01", "offline")

    # delete: the container and its volume go, the vmid is retired
    volume_id = native["volume_id"]
    status, body = await cloud.delete("/api/containers/100")
    assert status == 200 and (body["success"], body["status"], body["volume"]) == (True, "deleted", "deleted")
    assert (await cloud.api.get(f"/volumes/{volume_id}"))[0] == 404
    assert (await cloud.api.get("/containers/web-01"))[0] == 404
    assert await cloud.get("/api/containers/100") == (404, {"success": False, "error": "Container 100 not found"})

    entries = await activity(cloud)
    await wait_activity(cloud, "delete", 100)
    actions = [(a["action"], a["vmid"]) for a in await activity(cloud)]
    for expected in (("create", 100), ("create", 101), ("start", 100), ("stop", 100), ("delete", 100)):
        assert expected in actions, (expected, actions)
    oldest_first = [a["action"] for a in reversed(await activity(cloud)) if a["vmid"] == 100]
    # the create's own start once, then stop, start, reboot (stop + start), forced stop, delete
    assert oldest_first == ["create", "start", "stop", "start", "stop", "start", "stop", "delete"], oldest_first
    create = next(a for a in entries if a["action"] == "create" and a["vmid"] == 100)
    assert create["name"] == "web-01" and create["details"] == f"Created from {TEMPLATE}"

    # a daemon restart (same data dir): the vmid table is read back, vmids are not reused
    assert len(proxicloud_tasks()) == 2  # one node for both ports: one follower, one collector
    await cloud.main.close()  # the own port, then the front end, then the services
    assert proxicloud_tasks() == []
    client = await aiohttp_client(create_app(cloud.config))
    bearer = {"Authorization": auth_headers["Authorization"]}
    async with client.get("/compat/proxicloud/api/containers", headers=bearer) as resp:
        listing = await resp.json()
    assert [(c["vmid"], c["name"]) for c in listing["containers"]] == [(101, "proxicloud-001")]
    api = Api(client, auth_headers)
    await create_server(api, "native-1")
    async with client.get("/compat/proxicloud/api/containers", headers=bearer) as resp:
        listing = await resp.json()
    assert [(c["vmid"], c["name"]) for c in listing["containers"]] == [(101, "proxicloud-001"), (102, "native-1")]


async def test_native_container_gets_a_vmid(cloud: Cloud):
    await create_server(cloud.api, "game1", limits={"memory": 64 * 1024 * 1024})
    status, listing = await cloud.get("/api/containers")
    assert status == 200
    (item,) = listing["containers"]
    assert (item["vmid"], item["name"], item["status"], item["template"], item["memory"]) == (100, "game1", "stopped", TEST_IMAGE, 64)
    status, _ = await cloud.api.post("/containers/game1/start")
    await wait_state(cloud.api, "game1", "running")
    status, detail = await cloud.get("/api/containers/100")
    assert detail["status"] == "running" and detail["config"]["rootfs"] == "local:vm-100-disk-0"
    assert detail["config"]["net0"] == f"name=eth0,bridge={cloud.config.docker.network},ip=dhcp"
    entry = await wait_activity(cloud, "import", 100)
    assert entry["name"] == "game1" and TEST_IMAGE in entry["details"]
    await wait_activity(cloud, "start", 100)
    # deleted through the native API: gone here too, with its activity
    status, _ = await cloud.api.delete("/containers/game1")
    assert status in (200, 204)
    await wait_activity(cloud, "delete", 100)
    assert (await cloud.get("/api/containers/100"))[0] == 404


async def test_list_filters_and_search(cloud: Cloud):
    await cloud.create(hostname="web-a", start=True, memory=64)
    await cloud.create(hostname="db-b", memory=64)
    status, listing = await cloud.get("/api/containers", params={"status": "running"})
    assert [c["name"] for c in listing["containers"]] == ["web-a"] and listing["total"] == 1
    status, listing = await cloud.get("/api/containers", params={"status": "stopped"})
    assert [c["name"] for c in listing["containers"]] == ["db-b"]
    assert (await cloud.get("/api/containers", params={"status": "paused"}))[1]["containers"] == []
    status, listing = await cloud.get("/api/containers", params={"sort": "name", "order": "asc"})
    assert [c["name"] for c in listing["containers"]] == ["db-b", "web-a"]
    status, listing = await cloud.get("/api/containers", params={"sort": "vmid", "order": "desc"})
    assert [c["vmid"] for c in listing["containers"]] == [101, 100]
    status, listing = await cloud.get("/api/containers", params={"sort": "cpu_usage", "order": "desc"})
    assert status == 200 and len(listing["containers"]) == 2

    status, found = await cloud.get("/api/containers/search", params={"q": "WEB"})
    assert status == 200 and found["query"] == "WEB" and found["total"] == 1
    (hit,) = found["results"]
    assert set(hit) == {"vmid", "name", "status", "ip_address"} and hit["name"] == "web-a"
    status, found = await cloud.get("/api/containers/search", params={"q": hit["ip_address"]})
    assert [r["vmid"] for r in found["results"]] == [100]
    assert (await cloud.get("/api/containers/search", params={"q": "zzz"}))[1] == {"query": "zzz", "results": [], "total": 0}

    status, summary = await cloud.get("/api/dashboard/summary")
    assert status == 200
    assert summary["containers"] == {"total": 2, "running": 1, "stopped": 1, "paused": 0}
    resources = summary["resources"]
    assert resources["cpu"]["total"] >= 1 and 0 <= resources["memory"]["percent"] <= 100
    assert 0 < resources["storage"]["used"] <= resources["storage"]["total"]
    node = summary["node"]
    assert node["name"] and node["cpu_cores"] >= 1 and len(node["load_average"]) == 3 and node["uptime"] > 0
    assert {a["action"] for a in summary["recent_activity"]} >= {"create"}
    assert all(set(a) <= {"timestamp", "action", "vmid", "name", "details"} for a in summary["recent_activity"])


async def test_analytics_collected_and_served(make_cloud: Callable[..., Any], fast_collector: None):
    cloud = await make_cloud()
    await cloud.create(hostname="metrics-1", memory=128, start=True)
    # mounted and on its own port: one collector (and one activity follower) per daemon
    assert sorted(t.get_name() for t in proxicloud_tasks()) == ["proxicloud:activity", "proxicloud:analytics"]

    async def points() -> Any:
        status, body = await cloud.get("/api/analytics/100/cpu")
        assert status == 200, body
        return body if body["data"] else None

    cpu = await wait_for(points, timeout=20)
    assert (cpu["vmid"], cpu["metric"], cpu["range"], cpu["interval"]) == (100, "cpu", "1h", "30s")
    assert cpu["data_points"] == len(cpu["data"]) >= 1
    assert set(cpu["data"][0]) == {"timestamp", "value"} and cpu["min"] <= cpu["average"] <= cpu["max"]

    status, memory = await cloud.get("/api/analytics/100/memory", params={"range": "24h", "interval": "5m"})
    assert status == 200 and (memory["range"], memory["interval"]) == ("24h", "5m")
    point = memory["data"][0]
    assert point["value"] > 0 and 0 < point["percent"] <= 100 and memory["max"] >= memory["min"] > 0

    status, network = await cloud.get("/api/analytics/100/network", params={"range": "7d"})
    assert status == 200 and network["interval"] == "1h"
    assert set(network["data"][0]) == {"timestamp", "in", "out", "in_rate", "out_rate"}
    assert set(network["totals"]) == {"in", "out"}

    status, disk = await cloud.get("/api/analytics/100/disk", params={"range": "30d", "interval": "1m"})
    assert status == 200 and disk["data"][0]["usage"] >= 0 and disk["totals"] == {"read": None, "write": None}

    status, summary = await cloud.get("/api/analytics/100/summary")
    assert status == 200 and summary["vmid"] == 100 and summary["range"] == "1h"
    assert set(summary) == {"vmid", "range", "cpu", "memory", "network", "disk"}
    assert summary["memory"]["total"] == 128 * 1024 * 1024 and summary["memory"]["current"] > 0
    assert summary["disk"]["total"] == 9 * 1024**3

    # ranges: a sample from two hours ago is in 24h, not in 1h
    store = cloud.node().store
    two_hours_ago = time.time() - 7200
    await store.add_samples([(100, two_hours_ago, 77.0, 1, 1, 0, 0, 0)])
    status, hour = await cloud.get("/api/analytics/100/cpu", params={"range": "1h", "interval": "1m"})
    assert all(p["timestamp"] > two_hours_ago + 60 for p in hour["data"]) and hour["max"] < 77.0
    status, day = await cloud.get("/api/analytics/100/cpu", params={"range": "24h", "interval": "1m"})
    assert day["data"][0] == {"timestamp": int(two_hours_ago // 60 * 60), "value": 77.0} and day["max"] == 77.0
    assert day["data_points"] == hour["data_points"] + 1

    # retention: a sample older than 30 days is pruned by the next tick
    await store.add_samples([(100, time.time() - 31 * 86400, 1.0, 1, 1, 0, 0, 0)])
    month_ago = time.time() - 30 * 86400
    assert (await store.series(100, 0, 60))[0]["ts"] < month_ago

    async def pruned() -> bool:
        return (await store.series(100, 0, 60))[0]["ts"] > month_ago

    await wait_for(pruned, timeout=10)

    for query, message in (({"range": "2h"}, "Invalid range '2h'"), ({"interval": "10s"}, "Invalid interval '10s'")):
        status, body = await cloud.get("/api/analytics/100/cpu", params=query)
        assert status == 400 and body["success"] is False and body["error"].startswith(message), body
    assert (await cloud.get("/api/analytics/999/cpu"))[0] == 404
    assert (await cloud.get("/api/analytics/abc/cpu"))[0] == 400
    assert (await cloud.get("/api/analytics/100/gpu"))[0] == 404

    # deleting the container drops its history with its vmid
    assert (await cloud.delete("/api/containers/100"))[0] == 200
    assert await store.series(100, 0, 86400) == []


async def test_bad_input_is_4xx_and_leaves_nothing(cloud: Cloud):
    status, volumes_before = await cloud.api.get("/volumes")

    async def create_raw(data: Any, **kwargs: Any) -> tuple[int, Any]:
        return await cloud.post("/api/containers", data=data, headers={"Content-Type": "application/json"}, **kwargs)

    for data in (b"{not json", b"", b"[1, 2]", b'"text"', json.dumps({"hostname": "x"}).encode()):
        status, body = await create_raw(data)
        assert status == 400 and body["success"] is False and isinstance(body["error"], str), (data, body)
    for bad in ({"cores": "2"}, {"memory": 1.5}, {"start": "yes"}, {"hostname": "bad name"}, {"hostname": "-x"},
                {"cores": 0}, {"memory": 1}, {"network": "vmbr0"}, {"ssh_keys": [1]}, {"template": 5},
                {"storage": "../x"}):
        status, body = await cloud.post("/api/containers", json={"template": TEMPLATE, **bad})
        assert status == 400 and body["success"] is False, (bad, body)
    status, body = await cloud.post("/api/containers", json={"template": "invalid-template"})
    assert (status, body) == (400, {"success": False, "error": "Template 'invalid-template' not found"})
    status, body = await cloud.post("/api/containers", json={"hostname": "ok-1", "template": "debian-12-standard"})
    assert (status, body) == (400, {"success": False, "error": "Template 'debian-12-standard' not found"})

    # nothing was made: no container, no volume, no vmid
    assert (await cloud.api.get("/containers"))[1]["count"] == 0
    assert (await cloud.api.get("/volumes"))[1] == volumes_before
    assert (await cloud.get("/api/containers"))[1]["containers"] == []

    # the real backend's field names are accepted
    created = await cloud.create(hostname="alias-1", ostemplate=f"local:vztmpl/{TEMPLATE}_24.04-1_amd64.tar.zst",
                                 disk=4, start_on_boot=False, ssh_keys="ssh-ed25519 AAAA x\n", memory=64)
    vmid = created["vmid"]
    status, detail = await cloud.get(f"/api/containers/{vmid}")
    assert detail["config"]["rootfs"].endswith("size=4G") and detail["config"]["onboot"] is False
    # a second container with the same hostname, as Proxmox allows: its own vmid, its own internal id
    twin = await cloud.create(hostname="alias-1", memory=64)
    assert (twin["vmid"], twin["name"]) == (vmid + 1, "alias-1")
    status, listing = await cloud.get("/api/containers")
    assert [(c["vmid"], c["name"]) for c in listing["containers"]] == [(vmid, "alias-1"), (vmid + 1, "alias-1")]
    ids = [c["internal_id"] for c in (await cloud.api.get("/containers"))[1]["containers"]]
    assert ids == ["alias-1", "alias-1-2"]
    assert (await cloud.get(f"/api/containers/{vmid + 1}"))[1]["name"] == "alias-1"
    assert (await cloud.delete(f"/api/containers/{vmid + 1}"))[0] == 200
    assert (await wait_activity(cloud, "delete", vmid + 1))["name"] == "alias-1"  # its hostname, not its id

    for method, path in (("GET", "/api/containers/abc"), ("GET", "/api/containers/-1"), ("GET", "/api/containers/1e3"),
                         ("POST", "/api/containers/abc/start"), ("DELETE", "/api/containers/x"),
                         ("GET", "/api/containers/abc/status"), ("GET", "/api/containers/99999999999/status")):
        status, body = await cloud.call(method, path)
        assert status == 400 and body["success"] is False and "invalid vmid" in body["error"], (path, body)
    for method, path in (("GET", "/api/containers/999"), ("POST", "/api/containers/999/start"),
                         ("POST", "/api/containers/999/stop"), ("POST", "/api/containers/999/reboot"),
                         ("DELETE", "/api/containers/999"), ("GET", "/api/containers/999/status")):
        assert await cloud.call(method, path) == (404, {"success": False, "error": "Container 999 not found"}), path
    for path, params in (("/stop", {"timeout": "abc"}), ("/stop", {"timeout": "-1"}), ("/stop", {"force": "maybe"})):
        status, body = await cloud.post(f"/api/containers/{vmid}{path}", params=params)
        assert status == 400 and body["success"] is False, (params, body)
    status, body = await cloud.delete(f"/api/containers/{vmid}", params={"purge": "maybe"})
    assert status == 400
    for params in ({"sort": "memory"}, {"order": "up"}, {"status": "zombie"}):
        status, body = await cloud.get("/api/containers", params=params)
        assert status == 400 and body["success"] is False, params
    for params in ({}, {"q": " "}, {"q": "x" * 300}):
        status, body = await cloud.get("/api/containers/search", params=params)
        assert status == 400 and body["success"] is False, params
    assert (await cloud.get(f"/api/containers/{vmid}"))[0] == 200  # still there, untouched

    # a sweep of odd input: always a 4xx in the envelope, never a 500
    odd = ["%00", "..%2F..%2Fetc", "%D9%A1%D9%A2", "1%20OR%201", "x" * 300, "%F0%9F%92%A5"]
    for value in odd:
        for method, path in (("GET", f"/api/containers/{value}"), ("POST", f"/api/containers/{value}/stop"),
                             ("GET", f"/api/analytics/{value}/cpu"), ("GET", f"/api/templates/{value}/info"),
                             ("GET", f"/api/containers/search?q={value}"), ("GET", f"/api/containers?sort={value}"),
                             ("GET", f"/api/analytics/{vmid}/cpu?range={value}&interval={value}"),
                             ("POST", f"/api/containers/{vmid}/stop?timeout={value}")):
            status, body = await cloud.call(method, path)
            if "search" in path:  # any text is a query: no match is an empty result
                assert status in (200, 400) and ("results" in body or body["success"] is False), (path, body)
                continue
            assert 400 <= status < 500 and body["success"] is False, (method, path, status, body)
    for body in ({"template": TEMPLATE, "hostname": "w\u00e9b"}, {"template": "x" * 1000}, {"template": "%00"},
                 {"template": TEMPLATE, "network": {"bridge": 5}}, {"template": TEMPLATE, "features": []},
                 {"template": TEMPLATE, "memory": 10**30}, {"template": None}):
        status, answer = await cloud.post("/api/containers", json=body)
        assert status == 400 and answer["success"] is False, (body, answer)
    status, answer = await create_raw(b"[" * 100_000 + b"]" * 100_000)
    assert 400 <= status < 500 and answer["success"] is False
    status, answer = await create_raw(b'{"template": "' + b"a" * 2_000_000 + b'"}')
    assert status == 413 and answer["success"] is False
    assert (await cloud.api.get("/containers"))[1]["count"] == 1


async def test_engine_down_is_503(make_cloud: Callable[..., Any], tmp_path: Any):
    cloud = await make_cloud(docker={"socket": f"unix://{tmp_path}/missing/docker.sock", "engine_poll_seconds": 60})
    async with cloud.http.get(cloud.base + "/api/health") as resp:
        assert resp.status == 200 and resp.headers["X-Cache-Status"] == "offline"
        body = await resp.json()
    assert body["proxmox_connected"] is False and body["database_connected"] is True
    down = {"success": False, "error": "Docker engine unreachable"}
    for method, path in (("GET", "/api/containers"), ("GET", "/api/containers/100"), ("POST", "/api/containers/100/start"),
                         ("DELETE", "/api/containers/100"), ("GET", "/api/dashboard/summary"), ("GET", "/api/templates"),
                         ("GET", "/api/containers/search?q=a"), ("GET", "/api/info")):
        async with cloud.http.request(method, cloud.base + path) as resp:
            assert (resp.status, await resp.json(), resp.headers["X-Cache-Status"]) == (503, down, "offline"), path
    status, body = await cloud.post("/api/containers", json={"template": TEMPLATE})
    assert (status, body) == (503, down)
    assert (await cloud.get("/api/containers/generate-name"))[0] == 200


async def test_main_port_mount_and_curl(cloud: Cloud, node_token: str):
    created = await cloud.create(hostname="mounted", memory=64)
    bearer = {"Authorization": f"Bearer {node_token}"}
    async with cloud.main.get("/compat/proxicloud/api/containers", headers=bearer) as resp:
        assert resp.status == 200 and resp.headers["X-Cache-Status"] == "online"
        assert [c["vmid"] for c in (await resp.json())["containers"]] == [created["vmid"]]
    async with cloud.main.get("/compat/proxicloud/api/containers") as resp:
        assert resp.status == 401
    async with cloud.main.get("/compat/proxicloud/api/containers/abc", headers=bearer) as resp:
        assert resp.status == 400 and (await resp.json())["success"] is False

    async def curl(*args: str) -> Any:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--fail-with-body", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, (args, out, err)
        return json.loads(out)

    base = cloud.base + "/api"
    made = await curl("-X", "POST", f"{base}/containers", "-H", "Content-Type: application/json",
                      "-d", json.dumps({"hostname": "test-container", "template": TEMPLATE, "cores": 2, "memory": 1024,
                                        "start": True}))
    assert made["success"] is True and made["status"] == "running"
    listing = await curl(f"{base}/containers")
    assert listing["total"] == 2
    metrics = await curl(f"{base}/analytics/{made['vmid']}/cpu?range=24h")
    assert metrics["metric"] == "cpu" and metrics["interval"] == "5m"
    assert (await curl("-X", "DELETE", f"{base}/containers/{made['vmid']}"))["status"] == "deleted"
    main_node = cloud.node()
    assert main_node.vmid_of("test-container") == made["vmid"]  # retired, still remembered for late events


async def test_own_port_only(make_cloud: Callable[..., Any], fast_collector: None):
    cloud = await make_cloud(mount_on_main=False)
    assert sorted(t.get_name() for t in proxicloud_tasks()) == ["proxicloud:activity", "proxicloud:analytics"]
    created = await cloud.create(hostname="solo", memory=64, start=True)
    async with cloud.main.get("/compat/proxicloud/api/containers") as resp:
        assert resp.status == 404  # not mounted

    async def sampled() -> Any:
        return (await cloud.get(f"/api/analytics/{created['vmid']}/memory"))[1]["data"]

    await wait_for(sampled, timeout=10)
    await cloud.main.close()
    assert proxicloud_tasks() == []


async def test_failed_create_leaves_nothing(cloud: Cloud):
    status, volumes_before = await cloud.api.get("/volumes")
    status, body = await cloud.post("/api/containers", json={"hostname": "doomed", "template": "broken-1.0"})
    assert status == 400 and body["success"] is False and body["error"].startswith("install failed"), body
    assert (await cloud.api.get("/containers"))[1]["count"] == 0
    assert (await cloud.api.get("/volumes"))[1] == volumes_before
    assert (await cloud.get("/api/containers"))[1]["containers"] == []
    assert [a for a in await activity(cloud) if a["name"] == "doomed"] == []
    assert (await cloud.get("/api/containers/generate-name"))[1]["name"] == "proxicloud-001"
    # its vmid was retired with it: the next container gets the one after
    assert (await cloud.create(hostname="doomed", memory=64))["vmid"] == 101


async def test_analytics_start_only_once_proxicloud_is_used(aiohttp_client: Callable[..., Any], make_config: Callable[..., Any],
                                                           node_token: str, no_blocking_calls: None):
    """Mounted on the main port only (the default), a daemon whose ProxiCloud API nobody asks writes no
    samples; the first request starts the collector."""
    client = await aiohttp_client(create_app(make_config()))
    assert sorted(t.get_name() for t in proxicloud_tasks()) == ["proxicloud:activity"]
    async with client.get("/compat/proxicloud/api/health", headers={"Authorization": f"Bearer {node_token}"}) as resp:
        assert resp.status == 200
    assert sorted(t.get_name() for t in proxicloud_tasks()) == ["proxicloud:activity", "proxicloud:analytics"]


async def test_old_samples_are_compacted_to_one_an_hour(tmp_path: Any):
    """Past a day, samples become hourly rows: averages, network summed, the 30d series unchanged in its
    totals; recent samples stay at full resolution; compacting again changes nothing."""
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    store = ProxiCloudStore(lambda: core)
    try:
        now = time.time()
        start = (now - 3 * 86400) // 3600 * 3600  # on an hour boundary: exactly 3 buckets of 120 samples
        old = [(101, start + i * 30, float(i % 4), 100 + i, 1000, 10, 5, i) for i in range(360)]
        recent = [(101, now - 300 + i * 30, 50.0, 7, 1000, 1, 1, 9) for i in range(10)]
        await store.add_samples(old + recent)
        before = await store.series(101, now - 30 * 86400, 3600)
        removed = await store.compact_samples(now - 25 * 3600, 3600)
        assert removed == 360
        after = await store.series(101, now - 30 * 86400, 3600)
        assert [(r["ts"], r["net_in"], r["net_out"], r["disk"]) for r in after] == \
               [(r["ts"], r["net_in"], r["net_out"], r["disk"]) for r in before]
        assert [r["cpu"] for r in after] == pytest.approx([r["cpu"] for r in before])
        counts = [r["samples"] for r in after]
        assert counts[:3] == [1, 1, 1] and sum(counts[3:]) == 10  # three hourly rows, then full resolution
        assert await store.compact_samples(now - 25 * 3600, 3600) == 0
    finally:
        await core.close()
