"""The ProxiCloud front end's `app` flavour (the API its real Next.js web app calls) against the real Docker
engine, route by route, checked against the shapes its frontend reads (`frontend/lib/types.ts`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest

from lightd import keys
from lightd.compat.proxicloud import analytics
from lightd.compat.proxicloud.app_store import ProxiCloudAppStore
from lightd.volumes import swap
from lightd.volumes.service import VolumeService
from lightd.volumes.transfer import open_content
from tests.compat.helpers import FrontEndDaemon
from tests.conftest import TEST_IMAGE, wait_for
from tests.servers.helpers import wait_state

TEMPLATE = "ubuntu-24.04-standard"
VOLID = f"local:vztmpl/{TEMPLATE}_24.04_amd64.tar.zst"
IMAGE_MAP = {TEMPLATE: TEST_IMAGE}
GIB = 1024**3
CONTAINER = {"vmid", "name", "status", "node", "cpu", "mem", "maxmem", "disk", "maxdisk", "uptime", "template", "os"}
VOLUME = {"volid", "name", "size", "used", "node", "storage", "type", "format", "status", "created_at"}


class WebApp(FrontEndDaemon):
    """A daemon serving ProxiCloud's web-app API on its own port."""

    async def read(self, resp: aiohttp.ClientResponse) -> Any:
        body = await resp.json(content_type=None)
        if resp.status < 400:
            assert resp.headers.get("X-Cache-Status") == "MISS", (str(resp.url), dict(resp.headers))
        else:
            assert set(body) == {"error"} and isinstance(body["error"], str), body  # the Go backend's shape
        return body

    async def create(self, hostname: str, **body: Any) -> int:
        """As the frontend's create form sends it."""
        form = {"hostname": hostname, "cores": 1, "memory": 128, "disk": 8, "ostemplate": VOLID, "password": "",
                "ssh_keys": "", "start_on_boot": False, "unprivileged": True, "project_id": "", **body}
        status, answer = await self.post("/api/containers", json=form)
        assert status == 201 and set(answer) == {"vmid"}, answer
        return answer["vmid"]

    def records(self) -> ProxiCloudAppStore:
        return self.main.app[keys.COMPAT_FRONT_ENDS]["proxicloud"].records


@pytest.fixture
async def web(serve_front_end: Callable[..., Any], container_prefix: str) -> WebApp:
    return await serve_front_end(WebApp, "proxicloud", {"flavour": "app"},
                                 docker={"container_prefix": container_prefix, "image_map": IMAGE_MAP})


async def wait_status(web: WebApp, vmid: int, status: str) -> dict[str, Any]:
    async def seen() -> Any:
        code, body = await web.get(f"/api/containers/{vmid}")
        return body if code == 200 and body["status"] == status else None

    return await wait_for(seen, timeout=30)


async def test_health_dashboard_templates_and_storage(web: WebApp):
    assert await web.get("/api/health") == (200, {"status": "healthy"})
    assert await web.get("/api/dashboard") == (200, {
        "total_containers": 0, "running_containers": 0, "stopped_containers": 0, "total_cpu": 0,
        "total_memory": 0, "used_memory": 0, "total_disk": 0, "used_disk": 0})

    status, templates = await web.get("/api/templates")
    assert status == 200 and isinstance(templates, list)
    ubuntu = next(t for t in templates if t["volid"] == VOLID)
    assert set(ubuntu) == {"volid", "format", "size", "content"} and ubuntu["content"] == "vztmpl" and ubuntu["size"] > 0
    assert any(t["volid"] == TEST_IMAGE for t in templates)  # a local image: its own volid
    status, body = await web.post("/api/templates/upload")
    assert status == 501 and "Docker images" in body["error"]

    status, storages = await web.get("/api/storage", params={"enabled": "1"})
    assert status == 200 and len(storages) == 1
    local = storages[0]
    assert set(local) == {"storage", "type", "content", "active", "enabled", "avail", "total", "used", "used_fraction",
                          "shared"}
    assert (local["storage"], local["type"], local["active"], local["enabled"]) == ("local", "dir", True, True)
    assert local["total"] >= local["used"] > 0 and 0 < local["used_fraction"] < 1
    assert await web.get("/api/storage", params={"content": "backup"}) == (200, [])
    assert await web.get("/api/storage", params={"storage": "local-zfs"}) == (200, [])

    assert await web.get("/api/nothing") == (404, {"error": "Not Found"})
    # the same flavour on the main port's mount (node token there)
    assert await web.api.get("/compat/proxicloud/api/health") == (200, {"status": "healthy"})
    assert await web.api.get("/compat/proxicloud/api/projects") == (200, [])
    assert (await web.call("PUT", "/api/health"))[0] == 405
    assert await web.get("/api/containers/abc") == (400, {"error": "invalid vmid"})
    assert await web.get("/api/containers/4242") == (404, {"error": "Container 4242 not found"})


async def test_create_power_and_delete(web: WebApp):
    vmid = await web.create("web-01")
    assert vmid == 100
    status, listing = await web.get("/api/containers")
    assert status == 200 and isinstance(listing, list) and len(listing) == 1
    item = listing[0]
    assert set(item) == CONTAINER, item  # stopped: no ip_address; no project
    assert (item["vmid"], item["name"], item["status"], item["template"], item["os"]) == (100, "web-01", "stopped", TEMPLATE, "ubuntu")
    assert (item["cpu"], item["mem"], item["maxmem"], item["maxdisk"], item["uptime"]) == (0, 0, 128 * 1024**2, 8 * GIB, 0)
    assert item["node"] and item["disk"] >= 0
    assert await web.get("/api/containers/100") == (200, item)

    assert await web.post("/api/containers/100/reboot") == (409, {"error": "CT 100 is not running"})
    assert await web.post("/api/containers/100/stop") == (200, {"status": "stopped"})  # a no-op, as PVE's call
    status, termproxy = await web.post("/api/containers/100/termproxy")
    assert (status, termproxy) == (400, {"error": "container must be running to access console"})

    assert await web.post("/api/containers/100/start") == (200, {"status": "started"})
    await wait_status(web, 100, "running")

    async def sampled() -> Any:
        body = (await web.get("/api/containers/100"))[1]
        return body if body["mem"] > 0 else None

    running = await wait_for(sampled, timeout=20, interval=0.3)  # the stats sampler's first sample
    assert set(running) == CONTAINER | {"ip_address"} and running["ip_address"].count(".") == 3
    assert 0 <= running["cpu"] <= 1 and running["uptime"] >= 0
    assert await web.post("/api/containers/100/start") == (200, {"status": "started"})
    status, body = await web.post("/api/containers/100/termproxy")
    assert status == 501 and "termproxy" in body["error"]
    dashboard = (await web.get("/api/dashboard"))[1]
    assert (dashboard["total_containers"], dashboard["running_containers"], dashboard["stopped_containers"]) == (1, 1, 0)
    assert dashboard["total_memory"] == 128 * 1024**2 and dashboard["total_disk"] == 8 * GIB

    assert await web.post("/api/containers/100/reboot") == (200, {"status": "rebooting"})
    await wait_state(web.api, "web-01", "running")
    assert await web.post("/api/containers/100/stop") == (200, {"status": "stopped"})
    await wait_status(web, 100, "stopped")

    # an explicit vmid, and what the create refuses
    assert await web.create("web-02", vmid=500, ip_address="10.1.2.3/24", gateway="10.1.2.1") == 500
    assert await web.post("/api/containers", json={"hostname": "x", "ostemplate": VOLID, "vmid": 500}) == (
        409, {"error": "VMID 500 is already in use"})
    status, body = await web.post("/api/containers", json={"ostemplate": VOLID})
    assert status == 400 and body["error"].startswith("hostname")
    assert await web.post("/api/containers", json={"hostname": "x", "ostemplate": "local:vztmpl/nope_1_amd64.tar.zst"}) == (
        400, {"error": "Template 'nope' not found"})
    status, body = await web.post("/api/containers", json={"hostname": "x", "ostemplate": VOLID, "ip_address": "10.0.0.1"})
    assert status == 400 and body["error"].startswith("ip_address")
    status, body = await web.post("/api/containers", json={"hostname": "x", "ostemplate": VOLID, "memory": "lots"})
    assert status == 400 and body["error"].startswith("memory")
    status, body = await web.post("/api/containers", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in body["error"]
    status, body = await web.post("/api/containers", json={"hostname": "x", "ostemplate": VOLID, "project_id": "nope"})
    assert status == 400 and "not found" in body["error"]

    assert await web.delete("/api/containers/100") == (200, {"status": "deleted"})
    assert await web.get("/api/containers/100") == (404, {"error": "Container 100 not found"})
    assert await web.delete("/api/containers/100") == (404, {"error": "Container 100 not found"})
    assert [c["vmid"] for c in (await web.get("/api/containers"))[1]] == [500]
    assert await web.create("web-03") == 501  # vmids are never reused


async def test_metrics_from_the_analytics_store(web: WebApp, monkeypatch: pytest.MonkeyPatch):
    vmid = await web.create("metered")
    status, points = await web.get(f"/api/containers/{vmid}/metrics", params={"timeframe": "24h"})
    assert (status, points) == (200, [])
    status, summary = await web.get(f"/api/containers/{vmid}/metrics/summary", params={"hours": "24"})
    assert status == 200 and summary["data_points"] == 0 and summary["avg_cpu"] == 0.0

    monkeypatch.setattr(analytics, "SAMPLE_INTERVAL_SECONDS", 0.2)
    node = web.main.app[keys.COMPAT_FRONT_ENDS]["proxicloud"].node
    assert await web.post(f"/api/containers/{vmid}/start") == (200, {"status": "started"})
    await wait_status(web, vmid, "running")
    await wait_for(lambda: node.collector.sample_once(), timeout=20, interval=0.3)

    status, points = await web.get(f"/api/containers/{vmid}/metrics", params={"timeframe": "1h", "limit": "5"})
    assert status == 200 and 1 <= len(points) <= 5
    point = points[0]
    # what MetricsChart reads (timestamp in ms for `new Date()`, cpu and memory in %), and the backend's names
    assert {"timestamp", "cpu", "memory", "disk_read", "disk_write", "net_in", "net_out"} <= set(point)
    assert {"vmid", "cpu_usage", "mem_usage", "mem_total", "disk_usage", "disk_total"} <= set(point)
    assert point["vmid"] == vmid and point["timestamp"] > 1_000_000_000_000 and 0 <= point["memory"] <= 100
    assert point["mem_total"] == 128 * 1024**2 and point["disk_total"] == 8 * GIB
    assert [p["timestamp"] for p in points] == sorted((p["timestamp"] for p in points), reverse=True)

    status, summary = await web.get(f"/api/containers/{vmid}/metrics/summary", params={"hours": "1"})
    assert status == 200 and set(summary) == {
        "vmid", "start_time", "end_time", "avg_cpu", "max_cpu", "avg_mem_usage", "max_mem_usage", "avg_disk_usage",
        "total_net_in", "total_net_out", "data_points"}
    assert summary["vmid"] == vmid and summary["data_points"] >= 1 and summary["max_mem_usage"] > 0
    assert summary["start_time"].endswith("Z") and summary["start_time"] <= summary["end_time"]
    assert await web.get("/api/containers/x/metrics") == (400, {"error": "invalid vmid"})
    assert await web.get("/api/containers/999/metrics/summary") == (404, {"error": "Container 999 not found"})


async def test_projects(web: WebApp):
    body = {"name": "shop", "description": "the shop", "tags": ["prod"], "container_id_start": 700,
            "container_id_end": 702, "network": {"subnet": "10.5.0.0/24", "gateway": "10.5.0.1", "nameserver": ""}}
    status, project = await web.post("/api/projects", json=body)
    assert status == 201, project
    assert set(project) == {"id", "name", "description", "tags", "network", "container_id_start", "container_id_end",
                            "container_count", "created_at", "updated_at"}
    assert project["network"] == {"subnet": "10.5.0.0/24", "gateway": "10.5.0.1"} and project["container_count"] == 0
    pid = project["id"]
    assert await web.post("/api/projects", json={"name": "shop"}) == (409, {"error": "project with name 'shop' already exists"})
    assert await web.post("/api/projects", json={"description": "x"}) == (400, {"error": "name is required"})
    status, error = await web.post("/api/projects", json={"name": "b", "container_id_start": 701, "container_id_end": 800})
    assert status == 400 and "overlaps with project 'shop'" in error["error"]
    status, error = await web.post("/api/projects", json={"name": "b", "container_id_start": 701})
    assert status == 400 and "together" in error["error"]
    status, error = await web.post("/api/projects", json={"name": "b", "network": {"subnet": "10.0.0.5/24"}})
    assert status == 400 and error["error"].startswith("network.subnet")
    status, error = await web.post("/api/projects", json={"name": "b", "network": {"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}})
    assert status == 400 and error["error"].startswith("gateway validation failed")

    vmid = await web.create("member", project_id=pid)
    assert vmid == 700  # drawn from the project's range
    assert (await web.post("/api/containers", json={"hostname": "y", "ostemplate": VOLID, "project_id": pid, "vmid": 900}))[1] == {
        "error": "VMID 900 is outside project's container ID range 700-702"}
    other = await web.create("loner")
    assert other == 701  # outside any project: one above every vmid given
    item = (await web.get("/api/containers/700"))[1]
    assert item["project_id"] == pid and "project_id" not in (await web.get(f"/api/containers/{other}"))[1]

    status, listing = await web.get("/api/projects")
    assert status == 200 and [(p["id"], p["container_count"]) for p in listing] == [(pid, 1)]
    status, members = await web.get(f"/api/projects/{pid}/containers")
    assert status == 200 and members["project"]["id"] == pid and [c["vmid"] for c in members["containers"]] == [700]
    assert members["aggregate"] == {"total_containers": 1, "running": 0, "stopped": 1, "total_cpu_cores": 1,
                                    "total_memory_mb": 128, "used_memory_mb": 0}

    status, updated = await web.put(f"/api/projects/{pid}", json={"description": "new", "tags": ["a", "b"]})
    assert status == 200 and (updated["name"], updated["description"], updated["tags"]) == ("shop", "new", ["a", "b"])
    assert updated["container_id_start"] == 700 and updated["updated_at"] >= updated["created_at"]
    assert await web.get("/api/projects/nope") == (404, {"error": "project not found"})
    assert (await web.put("/api/projects/nope", json={}))[0] == 404

    assert await web.delete(f"/api/projects/{pid}") == (409, {"error": "cannot delete project: 1 container(s) still "
                                                                "assigned. Please delete or reassign containers first."})
    assert await web.post(f"/api/containers/{other}/project", json={"project_id": pid}) == (200, {"status": "assigned"})
    assert await web.post(f"/api/containers/{other}/project", json={"project_id": "nope"}) == (404, {"error": "project not found"})
    assert await web.post("/api/containers/999/project", json={"project_id": pid}) == (404, {"error": "container not found"})
    assert (await web.post(f"/api/containers/{other}/project", json={}))[0] == 400
    for member in (700, other):
        assert await web.post(f"/api/containers/{member}/project", json={"project_id": ""}) == (200, {"status": "assigned"})
    assert await web.delete(f"/api/projects/{pid}") == (200, {"status": "deleted"})
    assert await web.get(f"/api/projects/{pid}") == (404, {"error": "project not found"})


async def test_volumes_attachments_and_snapshots(web: WebApp, tmp_path: Any):
    volumes = web.main.app[keys.VOLUMES]
    vmid = await web.create("holder")
    status, created = await web.post("/api/volumes", json={"name": "data", "size": 2, "storage": "local-lvm", "type": "hdd"})
    assert status == 201 and set(created) == VOLUME, created
    assert (created["volid"], created["name"], created["size"], created["used"], created["storage"], created["type"],
            created["status"]) == ("local-lvm:data", "data", 2, 0, "local-lvm", "hdd", "available")
    assert await web.post("/api/volumes", json={"name": "data", "size": 1, "storage": "local-lvm"}) == (
        409, {"error": "volume 'local-lvm:data' already exists"})
    for bad in ({"name": "data", "size": 0}, {"size": 1}, {"name": "../x", "size": 1}, {"name": "vm-1-disk-0", "size": 1}):
        assert (await web.post("/api/volumes", json=bad))[0] == 400, bad

    status, listing = await web.get("/api/volumes")
    by_volid = {v["volid"]: v for v in listing}
    root = by_volid[f"local-lvm:vm-{vmid}-disk-0"]  # the container's own volume
    assert (root["status"], root["attached_to"], root["mountpoint"], root["size"]) == ("in-use", vmid, "rootfs", 8)
    assert await web.get("/api/volumes/local-lvm%3Adata") == (200, created)
    assert await web.get("/api/volumes/local-lvm%3Anope") == (404, {"error": "volume not found"})

    # attach / detach: the server's volume_mounts, from its next start
    assert await web.post(f"/api/volumes/local-lvm:data/attach/{vmid}", json={"vmid": vmid}) == (
        200, {"status": "attached", "message": f"mp0 at /mnt/data from CT {vmid}'s next start"})
    volume = (await web.get("/api/volumes/local-lvm:data"))[1]
    assert (volume["status"], volume["attached_to"], volume["mountpoint"]) == ("in-use", vmid, "mp0")
    assert (await web.post(f"/api/volumes/local-lvm:data/attach/{vmid}"))[0] == 409
    assert (await web.post("/api/volumes/local-lvm:data/attach/999"))[0] == 404
    assert (await web.post(f"/api/volumes/local-lvm:data/attach/{vmid}", json={"mountpoint": "/etc"}))[0] == 400
    assert (await web.delete("/api/volumes/local-lvm:data"))[0] == 409
    assert (await web.post(f"/api/volumes/local-lvm:vm-{vmid}-disk-0/detach/{vmid}"))[0] == 400
    assert await web.post(f"/api/volumes/local-lvm:data/detach/{vmid}", json={"vmid": vmid}) == (
        200, {"status": "detached", "message": f"not mounted when CT {vmid} next starts"})
    assert (await web.post(f"/api/volumes/local-lvm:data/detach/{vmid}"))[0] == 409

    # snapshots: a copy through the volume service; links are not copied
    volume_id = next(r for r in (await web.records().volume_records()).values() if r["volid"] == "local-lvm:data")["volume_id"]
    await volumes.write_file(volume_id, "dir/hello.txt", "one")
    (tmp_path / "secret").write_text("host file")
    os.symlink(tmp_path / "secret", volumes.path_of(volume_id) / "escape")  # SECURITY: symlink escape attempt
    status, snapshot = await web.post("/api/volumes/local-lvm:data/snapshots", json={"name": "snap1", "description": "first"})
    assert status == 201 and set(snapshot) == {"name", "volid", "description", "created_at", "size"}, snapshot
    assert (snapshot["name"], snapshot["volid"], snapshot["description"], snapshot["size"]) == ("snap1", "local-lvm:data", "first", 0)
    assert await web.get("/api/volumes/local-lvm:data/snapshots") == (200, [snapshot])
    assert (await web.post("/api/volumes/local-lvm:data/snapshots", json={"name": "snap1"}))[0] == 409
    assert (await web.post("/api/volumes/local-lvm:data/snapshots", json={"name": "1 bad"}))[0] == 400
    assert len((await web.get("/api/volumes"))[1]) == len(listing)  # the copy is not listed as a volume

    await volumes.write_file(volume_id, "dir/hello.txt", "two")
    await volumes.write_file(volume_id, "later.txt", "x")
    assert await web.post("/api/volumes/local-lvm:data/snapshots/restore", json={"snapshot_name": "snap1"}) == (
        200, {"status": "restored"})
    assert [e["name"] for e in (await volumes.list_dir(volume_id, ""))["entries"]] == ["dir"]
    assert await read(volumes, volume_id, "dir/hello.txt") == b"one"
    assert await web.post("/api/volumes/local-lvm:data/snapshots/restore", json={"snapshot_name": "nope"}) == (
        404, {"error": "snapshot 'nope' not found"})

    status, clone = await web.post("/api/volumes/local-lvm:data/snapshots/clone",
                                   json={"snapshot_name": "snap1", "new_name": "data-copy", "storage": ""})
    assert status == 201 and (clone["volid"], clone["size"], clone["type"]) == ("local-lvm:data-copy", 2, "hdd")
    clone_id = next(r for r in (await web.records().volume_records()).values() if r["volid"] == clone["volid"])["volume_id"]
    assert await read(volumes, clone_id, "dir/hello.txt") == b"one"
    assert (await web.post("/api/volumes/local-lvm:data/snapshots/clone",
                           json={"snapshot_name": "snap1", "new_name": "data-copy"}))[0] == 409

    # a volume in use by a running container is not restored over; detaching from it needs force
    assert await web.post(f"/api/containers/{vmid}/start") == (200, {"status": "started"})
    await wait_status(web, vmid, "running")
    assert await web.post(f"/api/volumes/local-lvm:data/attach/{vmid}", json={"mountpoint": "mp3"}) == (
        200, {"status": "attached", "message": f"mp3 at /mnt/data from CT {vmid}'s next start"})
    assert (await web.get("/api/volumes/local-lvm:data"))[1]["mountpoint"] == "mp3"
    assert await web.post("/api/volumes/local-lvm:data/snapshots/restore", json={"snapshot_name": "snap1"}) == (
        409, {"error": f"CT {vmid} is running: stop it first"})
    status, error = await web.post(f"/api/volumes/local-lvm:vm-{vmid}-disk-0/snapshots", json={"name": "root"})
    assert status == 201, error  # a running container's own volume can be snapshotted...
    assert (await web.post(f"/api/volumes/local-lvm:vm-{vmid}-disk-0/snapshots/restore",
                           json={"snapshot_name": "root"}))[0] == 409  # ...but not restored over
    assert await web.post(f"/api/volumes/local-lvm:data/detach/{vmid}", json={"vmid": vmid}) == (
        409, {"error": "container is running, use force=true to detach"})
    assert await web.post(f"/api/volumes/local-lvm:data/detach/{vmid}", json={"vmid": vmid, "force": True}) == (
        200, {"status": "detached", "message": f"unmounted from CT {vmid} at its next start"})

    copies = [s["copy_id"] for s in await web.records().snapshots(volume_id)]
    assert await web.delete("/api/volumes/local-lvm:data") == (200, {"status": "deleted"})
    assert await web.get("/api/volumes/local-lvm:data") == (404, {"error": "volume not found"})
    assert (await web.api.get(f"/volumes/{copies[0]}"))[0] == 404  # its snapshots went with it
    assert (await web.delete(f"/api/volumes/local-lvm:vm-{vmid}-disk-0"))[0] == 409  # a container's own volume


async def test_an_attached_volume_is_mounted_in_the_ct_from_its_next_start(web: WebApp):
    servers, volumes = web.main.app[keys.SERVERS], web.main.app[keys.VOLUMES]
    vmid = await web.create("mounter")
    server = await web.main.app[keys.COMPAT_FRONT_ENDS]["proxicloud"].node.find(vmid)
    assert (await web.post("/api/volumes", json={"name": "shared", "size": 1}))[0] == 201
    volume_id = next(r for r in (await web.records().volume_records()).values() if r["volid"] == "local-lvm:shared")["volume_id"]
    (volumes.path_of(volume_id) / "note.txt").write_text("attached")  # on the host, in the volume's directory

    assert await web.post(f"/api/containers/{vmid}/start") == (200, {"status": "started"})
    await wait_status(web, vmid, "running")
    await wait_for(lambda: not server.lock.locked)  # the start (answered at once) has ended: a patch may begin
    status, answer = await web.post(f"/api/volumes/local-lvm:shared/attach/{vmid}")
    assert status == 200, answer
    assert [m.target for m in server.spec.volume_mounts] == ["/mnt/shared"]  # the spec is the attachment
    volume = (await web.get("/api/volumes/local-lvm:shared"))[1]
    assert (volume["status"], volume["attached_to"], volume["mountpoint"]) == ("in-use", vmid, "mp0")
    assert (await servers.exec(server.id, ["test", "-e", "/mnt/shared/note.txt"]))[0] != 0  # not before a restart

    assert await web.post(f"/api/containers/{vmid}/reboot") == (200, {"status": "rebooting"})
    assert await wait_for(lambda: _cat(servers, server.id), timeout=30) == (0, "attached")
    assert (await web.delete("/api/volumes/local-lvm:shared"))[0] == 409

    # the records cannot say otherwise than the spec: a PATCH through the native API detaches it too
    await servers.patch(server.id, {"volume_mounts": []})
    assert (await web.get("/api/volumes/local-lvm:shared"))[1]["status"] == "available"
    assert (await web.post(f"/api/volumes/local-lvm:shared/attach/{vmid}", json={"mountpoint": "mp4"}))[0] == 200
    assert (await web.get("/api/volumes/local-lvm:shared"))[1]["mountpoint"] == "mp4"
    status, body = await web.post(f"/api/volumes/local-lvm:shared/detach/{vmid}", json={"force": True})
    assert status == 200 and body["status"] == "detached", body
    assert server.spec.volume_mounts == []
    assert await web.post(f"/api/containers/{vmid}/stop") == (200, {"status": "stopped"})
    await wait_status(web, vmid, "stopped")
    assert await web.post(f"/api/containers/{vmid}/start") == (200, {"status": "started"})
    await wait_status(web, vmid, "running")
    await wait_for(lambda: server.state == "running", timeout=30)
    assert (await servers.exec(server.id, ["test", "-e", "/mnt/shared/note.txt"]))[0] != 0  # gone after the restart
    assert await web.delete("/api/volumes/local-lvm:shared") == (200, {"status": "deleted"})


async def _cat(servers: Any, internal_id: str) -> tuple[int, str] | None:
    """`cat` of the attached file once the restarted container runs (None until then)."""
    try:
        result = await servers.exec(internal_id, ["cat", "/mnt/shared/note.txt"])
    except Exception:  # noqa: BLE001 - not running yet
        return None
    return result if result[0] == 0 else None


async def read(volumes: Any, volume_id: str, path: str) -> bytes:
    content = await open_content(volumes, volume_id, path)
    try:
        return b"".join([chunk async for chunk in content.chunks()])
    finally:
        content.close()


async def test_the_doc_flavour_stays_the_default(serve_front_end: Callable[..., Any], container_prefix: str):
    doc = await serve_front_end(FrontEndDaemon, "proxicloud", docker={"container_prefix": container_prefix})
    assert await doc.get("/api/dashboard") == (404, {"success": False, "error": "Not Found"})
    status, body = await doc.get("/api/containers")
    assert status == 200 and body["containers"] == []


async def test_an_interrupted_snapshot_restore_leaves_the_volume_whole(web: WebApp, monkeypatch: pytest.MonkeyPatch):
    volumes = web.main.app[keys.VOLUMES]
    assert await web.post("/api/volumes", json={"name": "atomic", "size": 1, "storage": "local-lvm"}) == (201, ANY)
    volume_id = next(r for r in (await web.records().volume_records()).values() if r["volid"] == "local-lvm:atomic")["volume_id"]
    await volumes.write_file(volume_id, "a.txt", "old")
    assert (await web.post("/api/volumes/local-lvm:atomic/snapshots", json={"name": "snap1"}))[0] == 201
    copy_id = (await web.records().snapshots(volume_id))[0]["copy_id"]
    await wait_for(lambda: volumes.path_of(copy_id).joinpath("a.txt").exists())
    await volumes.write_file(volume_id, "a.txt", "new")
    await volumes.write_file(volume_id, "b.txt", "new")
    work = volumes.restores / volume_id
    assert oct(os.stat(volumes.restores).st_mode & 0o777) == "0o700"

    # the swap step fails after the copy was staged: the volume is whole-old, the staging folder gone
    def refused(work: Any, volume: Any) -> None:
        assert (work / swap.STAGED / "a.txt").read_text() == "old"  # the copy was staged
        raise OSError(5, "planted swap failure")

    monkeypatch.setattr(swap, "swap", refused)
    assert (await web.post("/api/volumes/local-lvm:atomic/snapshots/restore", json={"snapshot_name": "snap1"}))[0] == 500
    monkeypatch.undo()
    assert sorted(os.listdir(volumes.path_of(volume_id))) == ["a.txt", "b.txt"]
    assert await read(volumes, volume_id, "a.txt") == b"new"
    assert not work.exists()

    # a restore in progress still holds its work folder: a second one is refused, the first's left alone
    work.mkdir()
    assert (await web.post("/api/volumes/local-lvm:atomic/snapshots/restore", json={"snapshot_name": "snap1"}))[0] == 409
    assert work.exists()
    work.rmdir()

    # a daemon killed after staging, before the swap: recovery at start drops the staged copy, volume old
    staged = swap.stage(work, volumes.path_of(volume_id))
    (staged / "a.txt").write_text("half")
    fresh = VolumeService(volumes.root, volumes.store, volumes.limits, restores=volumes.restores)
    await fresh.open()
    assert not work.exists()
    assert sorted(os.listdir(volumes.path_of(volume_id))) == ["a.txt", "b.txt"]
    assert await read(volumes, volume_id, "a.txt") == b"new"

    # killed after the swap, before the clean-up: the volume is whole-new, the old tree in the work folder goes
    staged = swap.stage(work, volumes.path_of(volume_id))
    (staged / "a.txt").write_text("old")
    swap.swap(work, volumes.path_of(volume_id))
    assert swap.recover(work) is True
    assert not work.exists()
    assert os.listdir(volumes.path_of(volume_id)) == ["a.txt"]

    # and a restore that completes
    await volumes.write_file(volume_id, "c.txt", "new")
    assert await web.post("/api/volumes/local-lvm:atomic/snapshots/restore", json={"snapshot_name": "snap1"}) == (
        200, {"status": "restored"})
    assert os.listdir(volumes.path_of(volume_id)) == ["a.txt"]
    assert await read(volumes, volume_id, "a.txt") == b"old"
    assert os.listdir(volumes.restores) == []
