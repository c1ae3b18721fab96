"""The Container Codes front end against the real Docker engine, on its own port (as an unmodified client
would use it) and through the /compat/container-codes mount on the main port."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from yarl import URL

from lightd import keys
from lightd.app import create_app
from lightd.compat.container_codes.jobs import JOB_RUNNER
from lightd.compat.container_codes.proxy import PROXY
from lightd.compat.container_codes.routes import FILE_AREA
from tests.compat.helpers import FrontEndDaemon, free_port
from tests.conftest import TEST_IMAGE, wait_for
from tests.servers.helpers import create_server, wait_state


class CC(FrontEndDaemon):
    """One daemon with the Container Codes front end on its own port; `http` sends the node token."""

    async def read(self, resp: aiohttp.ClientResponse) -> Any:
        return await resp.json() if resp.content_type == "application/json" else await resp.read()

    def services(self) -> Any:
        return self.main.app


@pytest.fixture
def make_cc(serve_front_end: Callable[..., Any], container_prefix: str) -> Callable[..., Any]:
    async def make() -> CC:
        return await serve_front_end(CC, "container_codes", bearer=True,
                                     docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0})

    return make


@pytest.fixture
async def cc(make_cc: Callable[..., Any]) -> CC:
    return await make_cc()


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, body
    error = body["error"]
    assert error["code"] == code, body
    assert error["message"] and error["request_id"]
    return error


async def wait_job(cc: CC, job_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = await cc.get(f"/api/jobs/{job_id}")
        assert status == 200, body
        return body if body["status"] in statuses else None

    return await wait_for(check, timeout=timeout, interval=0.2)


# -- core, auth, errors -------------------------------------------------------------------------------
async def test_health_info_auth_and_error_shape(cc: CC):
    status, body = await cc.get("/api/health")
    assert status == 200
    assert body["status"] == "healthy" and body["checks"]["docker"] == "healthy"
    assert body["checks"]["database"] == "healthy" and body["timestamp"].endswith("Z")
    status, info = await cc.get("/api/system/info")
    assert status == 200 and {"version", "uptime", "memory_usage", "cpu_usage", "active_connections"} <= set(info)
    assert info["memory_usage"] > 0

    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(cc.base + "/api/containers") as resp:
            error = assert_error(resp.status, await resp.json(), 401, "UNAUTHORIZED")
            assert resp.headers["X-Request-Id"] == error["request_id"]
        async with anonymous.get(cc.base + "/api/containers", headers={"X-API-Key": cc.token}) as resp:
            assert resp.status == 200  # the seed's other header
        async with anonymous.get(cc.base + "/api/containers", headers={"X-API-Key": "lightd_wrongwrongwrongwrong"}) as resp:
            assert_error(resp.status, await resp.json(), 401, "UNAUTHORIZED")
        async with anonymous.get(cc.base + "/api/containers", params={"token": cc.token}) as resp:
            assert resp.status == 401  # ?token= only on the WebSocket

    async with cc.http.get(cc.base + "/api/nope", headers={"X-Request-Id": "abc-123"}) as resp:
        error = assert_error(resp.status, await resp.json(), 404, "NOT_FOUND")
        assert error["request_id"] == "abc-123" == resp.headers["X-Request-Id"]
    status, body = await cc.call("PATCH", "/api/containers")
    assert_error(status, body, 405, "METHOD_NOT_ALLOWED")


async def test_mounted_on_the_main_port_with_the_node_token(cc: CC):
    headers = {"Authorization": f"Bearer {cc.token}"}  # no vendor media type: a foreign client
    async with cc.main.get("/compat/container-codes/api/containers", headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == {"containers": [], "total": 0, "limit": 50, "offset": 0}
    async with cc.main.get("/compat/container-codes/api/jobs/job_0", headers=headers) as resp:
        assert_error(resp.status, await resp.json(), 404, "JOB_NOT_FOUND")
    async with cc.main.get("/compat/container-codes/api/containers") as resp:
        assert resp.status == 401
    # one job runner and one proxy per daemon, whichever way a request arrives
    front_end = cc.main.app[keys.COMPAT_FRONT_ENDS]["container_codes"]
    (mounted,) = [app for app in cc.main.app._subapps if app.get(keys.FRONT_END) == "container_codes"]
    assert mounted[JOB_RUNNER] is front_end.jobs and mounted[PROXY] is front_end.proxy
    assert mounted[FILE_AREA] is front_end.files
    async with cc.main.post("/compat/container-codes/api/jobs", headers=headers,
                            json={"name": "via-mount", "image": TEST_IMAGE, "command": "true"}) as resp:
        job_id = (await resp.json())["job_id"]
    job = await wait_job(cc, job_id, {"completed", "failed"})  # polled on the own port
    assert job["status"] == "completed"


# -- containers ---------------------------------------------------------------------------------------
async def test_container_lifecycle_with_real_containers(cc: CC):
    status, body = await cc.post("/api/containers", json={
        "name": "web-app-1", "image": TEST_IMAGE, "environment": {"GREETING": "hi"},
        "resources": {"cpu_limit": "0.5", "memory_limit": "64m"}, "restart_policy": "unless-stopped",
        "command": ["sh", "-c", "echo $GREETING from cc; while true; do sleep 3600; done"],
    })
    assert status == 201, body
    assert body["id"] == body["name"] == "web-app-1" and body["status"] == "running"
    assert body["image"] == TEST_IMAGE and body["ports"] == [] and body["created_at"].endswith("Z")
    native = (await cc.api.get("/containers/web-app-1"))[1]  # the same lightd container
    assert native["state"] == "running" and native["limits"] == {"memory": 64 * 1024 * 1024, "cpu": 0.5, "pids": 512, "disk": 0}
    assert native["restart_on_crash"] is True

    status, detail = await cc.get("/api/containers/web-app-1")
    assert status == 200 and detail["environment"] == {"GREETING": "hi"}
    assert detail["resources"] == {"cpu_limit": 0.5, "memory_limit": 64 * 1024 * 1024}

    async def greeted() -> bool:
        status, logs = await cc.get("/api/containers/web-app-1/logs", params={"tail": "10"})
        return status == 200 and "hi from cc" in logs["lines"]

    await wait_for(greeted, timeout=10)
    status, stats = await cc.get("/api/containers/web-app-1/stats")
    assert status == 200 and {"cpu_usage", "memory_usage", "memory_limit", "network_rx", "timestamp"} <= set(stats)

    status, body = await cc.post("/api/containers/web-app-1/stop", params={"timeout": "5"})
    assert (status, body) == (200, {"id": "web-app-1", "status": "exited"})
    status, listing = await cc.get("/api/containers", params={"status": "stopped"})
    assert [c["id"] for c in listing["containers"]] == ["web-app-1"]
    status, listing = await cc.get("/api/containers", params={"status": "running"})
    assert listing["containers"] == [] and listing["total"] == 0
    async with cc.http.get(cc.base + "/api/containers/web-app-1/logs", params={"follow": "true"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert "hi from cc" in (await resp.text()).splitlines()  # stopped: the history, then the end
    status, body = await cc.get("/api/containers/web-app-1/logs", params={"follow": "often"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.post("/api/containers/web-app-1/start")
    assert (status, body) == (200, {"id": "web-app-1", "status": "running"})
    status, body = await cc.post("/api/containers/web-app-1/start")
    assert_error(status, body, 409, "CONFLICT")  # already running
    status, body = await cc.post("/api/containers/web-app-1/restart")
    assert (status, body) == (200, {"id": "web-app-1", "status": "running"})

    # a container made through the native API shows up, and can be driven from here
    await create_server(cc.api, "native-1")
    status, listing = await cc.get("/api/containers")
    assert [c["id"] for c in listing["containers"]] == ["web-app-1", "native-1"] and listing["total"] == 2
    assert listing["containers"][1]["status"] == "created"
    status, page = await cc.get("/api/containers", params={"limit": "1", "offset": "1"})
    assert [c["id"] for c in page["containers"]] == ["native-1"] and page["total"] == 2
    status, filtered = await cc.get("/api/containers", params={"image": "nginx:latest"})
    assert filtered["containers"] == []
    status, body = await cc.post("/api/containers/native-1/start")
    assert (status, body["status"]) == (200, "running")
    await wait_state(cc.api, "native-1", "running")

    status, body = await cc.delete("/api/containers/web-app-1")
    assert (status, body) == (200, {"id": "web-app-1", "deleted": True})
    status, body = await cc.get("/api/containers/web-app-1")
    error = assert_error(status, body, 404, "CONTAINER_NOT_FOUND")
    assert error["message"] == "Container with ID 'web-app-1' not found"
    assert error["details"] == {"container_id": "web-app-1", "available_containers": ["native-1"]}
    assert (await cc.api.get("/containers/web-app-1"))[0] == 404
    status, volumes = await cc.api.get("/volumes")
    # the front end's volume went with it; native-1's stays (the file area's volume is made on first use)
    assert len(volumes["volumes"]) == 1
    status, body = await cc.delete("/api/containers/native-1")
    assert status == 200
    for action in ("start", "stop", "restart"):
        status, body = await cc.post(f"/api/containers/ghost/{action}")
        assert_error(status, body, 404, "CONTAINER_NOT_FOUND")


async def test_bad_container_input_is_4xx_and_leaves_nothing_behind(cc: CC):
    async def nothing_left() -> None:
        assert (await cc.api.get("/containers"))[1]["containers"] == []
        assert (await cc.api.get("/volumes"))[1]["volumes"] == []  # no file area until files are used

    status, body = await cc.post("/api/containers", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    assert "malformed JSON" in body["error"]["message"]
    status, body = await cc.post("/api/containers", json=["a", "list"])
    assert_error(status, body, 400, "INVALID_REQUEST")
    bad_bodies = [
        {"image": TEST_IMAGE},  # no name
        {"name": 5, "image": TEST_IMAGE},
        {"name": "-bad", "image": TEST_IMAGE},
        {"name": "ok", "image": TEST_IMAGE, "command": [1, 2]},
        {"name": "ok", "image": TEST_IMAGE, "environment": {"1BAD": "x"}},
        {"name": "ok", "image": TEST_IMAGE, "resources": {"memory_limit": "lots"}},
        {"name": "ok", "image": TEST_IMAGE, "resources": {"cpu_limit": "-1"}},
        {"name": "ok", "image": TEST_IMAGE, "restart_policy": "sometimes"},
        {"name": "ok", "image": "../../etc"},
        {"name": "ok", "image": "nosuchimage:404"},
        {"name": "ok", "image": TEST_IMAGE, "network_mode": "host"},
        {"name": "ok", "image": TEST_IMAGE, "ports": {"3000": "8080"}},  # lightd keeps the number
        {"name": "ok", "image": TEST_IMAGE, "ports": {"abc": "8080"}},
        {"name": "ok", "image": TEST_IMAGE, "volumes": {"/app/data": "/etc"}},  # not an allowed mount
        {"name": "ok", "image": TEST_IMAGE, "volumes": {"/app/data": "../x"}},
    ]
    for bad in bad_bodies:
        status, body = await cc.post("/api/containers", json=bad)
        assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.post("/api/containers", json={"name": "ok", "image": TEST_IMAGE, "ports": {"41234": "41234"}})
    assert_error(status, body, 409, "CONFLICT")  # not a pool port
    status, body = await cc.get("/api/containers", params={"limit": "0"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.get("/api/containers", params={"status": "zombie"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.post("/api/containers", data=b"x" * (65 * 1024 * 1024 + 10),
                                 headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "PAYLOAD_TOO_LARGE")
    await nothing_left()
    status, body = await cc.post("/api/containers", json={"name": "dup", "image": TEST_IMAGE, "start": False})
    assert status == 201 and body["status"] == "created"
    status, body = await cc.post("/api/containers", json={"name": "dup", "image": TEST_IMAGE})
    assert_error(status, body, 409, "CONFLICT")
    assert len((await cc.api.get("/volumes"))[1]["volumes"]) == 1  # no volume left by the refused twin


# -- files --------------------------------------------------------------------------------------------
def _form(content: bytes, path: str | None = None, permissions: str | None = None, filename: str = "a.txt") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=filename, content_type="application/octet-stream")
    if path is not None:
        form.add_field("path", path)
    if permissions is not None:
        form.add_field("permissions", permissions)
    return form


async def test_files_write_read_list_delete(cc: CC):
    status, info = await cc.post("/api/files/upload", data=_form(b"0123456789", "/docs/report.txt", "600"))
    assert status == 201, info
    assert info["path"] == "/docs/report.txt" and info["size"] == 10 and info["permissions"] == "600"
    assert info["mime_type"] == "text/plain" and info["etag"].startswith('"10-')
    status, default = await cc.post("/api/files/upload", data=_form(b"\x00\xffbinary", filename="blob.bin"))
    assert status == 201 and default["path"] == "/uploads/blob.bin"

    status, same = await cc.get("/api/files/info/docs/report.txt")
    assert status == 200 and same == info
    async with cc.http.get(cc.base + "/api/files/download/docs/report.txt") as resp:
        assert resp.status == 200 and await resp.read() == b"0123456789"
        etag = resp.headers["ETag"]
        assert etag == info["etag"]
    async with cc.http.get(cc.base + "/api/files/download/docs/report.txt", headers={"Range": "bytes=2-4"}) as resp:
        assert resp.status == 206 and await resp.read() == b"234"
        assert resp.headers["Content-Range"] == "bytes 2-4/10"
    async with cc.http.get(cc.base + "/api/files/download/docs/report.txt", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    async with cc.http.get(cc.base + "/api/files/download/docs/report.txt", headers={"Range": "bytes=50-"}) as resp:
        assert resp.status == 416
    async with cc.http.get(cc.base + "/api/files/download/uploads/blob.bin") as resp:
        assert await resp.read() == b"\x00\xffbinary"

    status, listing = await cc.get("/api/files/list")
    assert [e["name"] for e in listing["entries"]] == ["docs", "uploads"]
    status, listing = await cc.get("/api/files/list/docs")
    assert [(e["name"], e["size"]) for e in listing["entries"]] == [("report.txt", 10)]
    status, body = await cc.delete("/api/files/docs/report.txt")
    assert (status, body) == (200, {"path": "/docs/report.txt", "deleted": "file"})
    status, body = await cc.get("/api/files/info/docs/report.txt")
    assert_error(status, body, 404, "FILE_NOT_FOUND")
    status, body = await cc.get("/api/files/download/nope.txt")
    assert_error(status, body, 404, "FILE_NOT_FOUND")

    # bad uploads
    status, body = await cc.post("/api/files/upload", json={"path": "x"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    form = aiohttp.FormData()
    form.add_field("path", "x.txt")
    status, body = await cc.post("/api/files/upload", data=form)
    assert_error(status, body, 400, "INVALID_REQUEST")  # no file part
    status, body = await cc.post("/api/files/upload", data=_form(b"x", "p.txt", "999"))
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.post("/api/files/upload", data=_form(b"x", "p" * 5000))
    assert_error(status, body, 400, "INVALID_REQUEST")


async def test_file_traversal_and_symlink_escape_are_refused(cc: CC, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    app = cc.services()
    volume_id = await app[keys.COMPAT_FRONT_ENDS]["container_codes"].files.volume()
    area = app[keys.VOLUMES].path_of(volume_id)
    os.symlink(outside, area / "escape")  # planted by someone with access to the container's files
    os.symlink(outside / "secret.txt", area / "secret-link")

    for path in ("..%2f..%2fetc%2fpasswd", "docs%2f..%2f..%2f..%2fx", "%2e%2e%2f%2e%2e%2fetc%2fpasswd"):
        for route in ("download", "info"):
            async with cc.http.get(URL(f"{cc.base}/api/files/{route}/{path}", encoded=True)) as resp:
                assert_error(resp.status, await resp.json(), 400, "INVALID_PATH")
    for path in ("../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"):
        # dot segments are resolved by the URL parser before routing: no file route matches
        async with cc.http.get(URL(f"{cc.base}/api/files/download/{path}", encoded=True)) as resp:
            assert 400 <= resp.status < 500 and "error" in await resp.json()
    for path in ("escape/secret.txt", "secret-link"):
        status, body = await cc.get(f"/api/files/download/{path}")
        assert 400 <= status < 500 and "error" in body, body
    status, body = await cc.get("/api/files/list/escape")
    assert 400 <= status < 500
    status, body = await cc.post("/api/files/upload", data=_form(b"pwned", "escape/new.txt"))
    assert 400 <= status < 500
    status, body = await cc.post("/api/files/upload", data=_form(b"pwned", "../../new.txt"))
    assert_error(status, body, 400, "INVALID_PATH")
    status, body = await cc.delete("/api/files/escape/secret.txt")
    assert 400 <= status < 500
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"] and (outside / "secret.txt").read_text() == "secret"
    status, body = await cc.delete("/api/files/escape")  # deleting the link removes the link only
    assert status == 200 and body["deleted"] == "symlink"
    assert (outside / "secret.txt").exists()


# -- jobs ---------------------------------------------------------------------------------------------
async def test_jobs_run_to_completion_fail_retry_and_cancel(cc: CC):
    status, _ = await cc.post("/api/files/upload", data=_form(b"a,b\n1,2\n", "/uploads/data.csv"))
    assert status == 201
    status, body = await cc.post("/api/jobs", json={
        "name": "data-processing-job", "image": TEST_IMAGE,
        "command": ["sh", "-c", "mkdir -p output && wc -l < input/data.csv > output/count.json && echo processed $MODE"],
        "environment": {"MODE": "fast"},
        "input_files": [{"source": "/uploads/data.csv", "destination": "/input/data.csv"}],
        "output_patterns": ["/output/*.json"], "resources": {"timeout": "60s"}, "priority": "high",
    })
    assert status == 202, body
    job_id = body["job_id"]
    assert job_id.startswith("job_") and body["status"] in ("queued", "running")
    job = await wait_job(cc, job_id, {"completed", "failed"})
    assert job["status"] == "completed", job
    assert job["exit_code"] == 0 and job["progress"] == 100 and job["attempts"] == 1
    assert job["output_files"] == ["output/count.json"] and job["container_id"] == job_id
    status, logs = await cc.get(f"/api/jobs/{job_id}/logs")
    assert "processed fast" in logs["lines"]
    status, output = await cc.get(f"/api/jobs/{job_id}/output")
    assert output["files"] == [{"path": "output/count.json", "size": 2}]
    async with cc.http.get(cc.base + f"/api/jobs/{job_id}/output/output/count.json") as resp:
        assert resp.status == 200 and (await resp.read()).strip() == b"2"
    status, body = await cc.get(f"/api/jobs/{job_id}/output/input/data.csv")
    assert_error(status, body, 404, "NOT_FOUND")  # only reported outputs are served (the job exists)
    assert (await cc.api.get(f"/containers/{job_id}"))[0] == 404  # the job's container is gone

    # a failing command, retried by its policy
    status, body = await cc.post("/api/jobs", json={
        "name": "fails", "image": TEST_IMAGE, "command": "echo trying; exit 3",
        "retry_policy": {"max_attempts": 2, "backoff": "fixed", "delay": "0.1s"},
    })
    failing = body["job_id"]
    job = await wait_job(cc, failing, {"completed", "failed"})
    assert (job["status"], job["exit_code"], job["attempts"]) == ("failed", 3, 2)
    assert job["error"] == "exited with code 3"
    status, body = await cc.post(f"/api/jobs/{failing}/cancel")
    assert_error(status, body, 409, "CONFLICT")

    # cancel a running job, retry it, cancel again
    status, body = await cc.post("/api/jobs", json={"name": "long", "image": TEST_IMAGE, "command": ["sleep", "300"]})
    long_job = body["job_id"]
    await wait_job(cc, long_job, {"running"})

    async def container_running() -> bool:
        status, view = await cc.api.get(f"/containers/{long_job}")
        return status == 200 and view["state"] == "running"

    await wait_for(container_running, timeout=20)
    status, body = await cc.post(f"/api/jobs/{long_job}/cancel")
    assert (status, body["status"]) == (200, "cancelled")
    assert (await cc.api.get(f"/containers/{long_job}"))[0] == 404
    status, body = await cc.post(f"/api/jobs/{long_job}/retry")
    assert status == 202 and body["status"] in ("queued", "running")
    await wait_job(cc, long_job, {"running"})
    status, body = await cc.post(f"/api/jobs/{long_job}/cancel")
    assert body["status"] == "cancelled" and body["attempts"] == 2

    status, listing = await cc.get("/api/jobs")
    assert listing["total"] == 3 and {j["job_id"] for j in listing["jobs"]} == {job_id, failing, long_job}
    status, listing = await cc.get("/api/jobs", params={"status": "failed"})
    assert [j["job_id"] for j in listing["jobs"]] == [failing]
    status, listing = await cc.get("/api/jobs", params={"created_since": "2999-01-01T00:00:00Z"})
    assert listing["jobs"] == []

    # bad input
    status, body = await cc.get("/api/jobs/job_nope")
    assert_error(status, body, 404, "JOB_NOT_FOUND")
    for bad in ({"name": "x", "image": TEST_IMAGE}, {"name": "x", "image": TEST_IMAGE, "command": []},
                {"name": "x", "image": "nosuchimage:1", "command": "true"},
                {"name": "x", "image": TEST_IMAGE, "command": "true", "priority": "urgent"},
                {"name": "x", "image": TEST_IMAGE, "command": "true", "timeout": "forever"},
                {"name": "x", "image": TEST_IMAGE, "command": "true", "output_patterns": ["../*"]},
                {"name": "x", "image": TEST_IMAGE, "command": "true", "retry_policy": {"max_attempts": "3"}}):
        status, body = await cc.post("/api/jobs", json=bad)
        assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.get("/api/jobs", params={"status": "sleeping"})
    assert_error(status, body, 400, "INVALID_REQUEST")

    # a time limit kills the job
    status, body = await cc.post("/api/jobs", json={"name": "slow", "image": TEST_IMAGE, "command": "sleep 60",
                                                    "timeout": "1s"})
    job = await wait_job(cc, body["job_id"], {"completed", "failed"})
    assert (job["status"], job["error"]) == ("failed", "timed out after 1s")
    assert (await cc.api.get(f"/containers/{body['job_id']}"))[0] == 404

    # a missing input file fails the job (recorded), it does not break the runner
    status, body = await cc.post("/api/jobs", json={
        "name": "no-input", "image": TEST_IMAGE, "command": "true",
        "input_files": [{"source": "/uploads/missing.csv", "destination": "in.csv"}],
    })
    job = await wait_job(cc, body["job_id"], {"completed", "failed"})
    assert job["status"] == "failed" and "no such file" in job["error"]


async def test_a_job_running_when_the_daemon_stops_is_failed_at_the_next_start(
    aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], node_token: str, container_prefix: str,
    no_blocking_calls: None,
):
    config = make_config(docker={"container_prefix": container_prefix})
    headers = {"Authorization": f"Bearer {node_token}"}
    first = await aiohttp_client(create_app(config))
    async with first.post("/compat/container-codes/api/jobs", headers=headers,
                          json={"name": "long", "image": TEST_IMAGE, "command": "sleep 300"}) as resp:
        job_id = (await resp.json())["job_id"]

    async def running() -> bool:
        async with first.get(f"/compat/container-codes/api/jobs/{job_id}", headers=headers) as resp:
            return (await resp.json())["status"] == "running"

    await wait_for(running, timeout=20)
    await first.close()  # the daemon stops; the job never finished

    second = await aiohttp_client(create_app(config))
    async with second.get(f"/compat/container-codes/api/jobs/{job_id}", headers=headers) as resp:
        job = await resp.json()
    assert job["status"] == "failed" and job["error"].startswith("interrupted")
    native = {**headers, "Accept": "Application/vnd.pkglatv1+json"}

    async def job_cleaned_up() -> bool:  # the interrupted job is cleaned up at start-up, in the background
        async with second.get("/containers", headers=native) as resp:
            containers = (await resp.json())["containers"]
        async with second.get("/volumes", headers=native) as resp:
            volumes = (await resp.json())["volumes"]  # (no file area: this job used no files)
        return containers == [] and volumes == []

    await wait_for(job_cleaned_up, timeout=10)
    # and it can be retried
    async with second.post(f"/compat/container-codes/api/jobs/{job_id}/retry", headers=headers) as resp:
        assert resp.status == 202
    async with second.post(f"/compat/container-codes/api/jobs/{job_id}/cancel", headers=headers) as resp:
        assert (await resp.json())["status"] == "cancelled"


# -- reverse proxy ------------------------------------------------------------------------------------
async def test_proxy_to_a_containers_published_loopback_port(cc: CC):
    port = free_port()
    status, _ = await cc.api.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    assert status == 201
    status, body = await cc.post("/api/containers", json={
        "name": "web", "image": TEST_IMAGE, "ports": {str(port): str(port)},
        "command": "mkdir -p app && echo hello from httpd > app/index.html && exec httpd -f -p $SERVER_PORT",
    })
    assert status == 201, body
    assert body["ports"] == [f"{port}:{port}"]

    status, upstream = await cc.post("/api/proxy/upstreams", json={
        "name": "web-servers", "strategy": "round_robin",
        "servers": [{"address": f"127.0.0.1:{port}", "weight": 2, "max_fails": 3, "fail_timeout": "30s"}],
    })
    assert status == 201, upstream
    status, route = await cc.post("/api/proxy/routes", json={"path": "/app/*", "method": "GET", "upstream": "web-servers",
                                                             "headers": {"X-Real-IP": "$remote_addr"}})
    assert status == 201 and route["id"].startswith("route_")

    async def served() -> bool:
        async with cc.http.get(cc.base + "/proxy/app/index.html") as resp:
            return resp.status == 200 and await resp.read() == b"hello from httpd\n"

    await wait_for(served, timeout=15, interval=0.2)
    status, body = await cc.post("/proxy/app/index.html")  # the route is GET only
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await cc.get("/proxy/other")
    assert_error(status, body, 404, "NOT_FOUND")
    status, stats = await cc.get("/api/proxy/stats")
    assert stats["requests_total"] >= 3 and stats["upstreams"]["web-servers"]["total_requests"] >= 1
    assert stats["upstreams"]["web-servers"]["servers"][0]["address"] == f"127.0.0.1:{port}"
    assert set(stats["response_times"]) == {"avg", "p50", "p95", "p99"}

    # only loopback IP literals are accepted as upstream servers
    for address in ("10.0.0.1:80", "example.com:80", "localhost:80", "0.0.0.0:80", "127.0.0.1", "[::ffff:1.2.3.4]:80"):
        status, body = await cc.post("/api/proxy/upstreams", json={"name": "bad", "servers": [{"address": address}]})
        assert_error(status, body, 400, "INVALID_REQUEST")
    # loopback but not a container's published port (here: the daemon's own API): never contacted
    main_port = cc.main.server.port
    status, _ = await cc.post("/api/proxy/upstreams", json={"name": "daemon", "servers": [{"address": f"127.0.0.1:{main_port}"}]})
    assert status == 201
    status, _ = await cc.post("/api/proxy/routes", json={"id": "to-daemon", "path": "/containers", "upstream": "daemon"})
    assert status == 201
    status, body = await cc.get("/proxy/containers")
    assert_error(status, body, 502, "BAD_GATEWAY")

    status, body = await cc.post("/api/proxy/routes", json={"path": "/x", "upstream": "missing"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.post("/api/proxy/routes", json={"path": "no-slash", "upstream": "daemon"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, body = await cc.delete("/api/proxy/upstreams/daemon")
    assert_error(status, body, 409, "CONFLICT")
    status, body = await cc.get("/api/proxy/upstreams/nope")
    assert_error(status, body, 404, "UPSTREAM_NOT_FOUND")
    status, body = await cc.get("/api/proxy/routes/nope")
    assert_error(status, body, 404, "ROUTE_NOT_FOUND")
    status, _ = await cc.delete("/api/proxy/routes/to-daemon")
    assert status == 200
    status, _ = await cc.delete("/api/proxy/upstreams/daemon")
    assert status == 200
    status, listing = await cc.get("/api/proxy/upstreams")
    assert [u["name"] for u in listing["upstreams"]] == ["web-servers"]

    status, config = await cc.put("/api/proxy/config", json={"enabled": False})
    assert status == 200 and config["enabled"] is False
    status, body = await cc.get("/proxy/app/index.html")
    assert_error(status, body, 503, "SERVICE_UNAVAILABLE")
    status, body = await cc.put("/api/proxy/config", json={"enabled": "maybe"})
    assert_error(status, body, 400, "INVALID_REQUEST")
    status, config = await cc.get("/api/proxy/config")
    assert config["enabled"] is False and config["upstreams"] == 1 and config["routes"] == 1


# -- updates socket -----------------------------------------------------------------------------------
async def test_updates_socket_reports_state_changes_and_jobs(cc: CC):
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await anonymous.ws_connect(cc.base + "/api/ws/updates")
        assert refused.value.status == 401
        async with anonymous.ws_connect(cc.base + "/api/ws/updates", params={"token": cc.token}) as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
            assert first["type"] == "system_metric" and {"cpu_usage", "memory_usage", "timestamp"} <= set(first["data"])
            await create_server(cc.api, "watched")
            status, _ = await cc.post("/api/containers/watched/start")
            assert status == 200
            status, body = await cc.post("/api/jobs", json={"name": "quick", "image": TEST_IMAGE, "command": "true"})
            job_id = body["job_id"]
            seen_events: list[tuple[str, str]] = []
            job_statuses: list[str] = []
            deadline = asyncio.get_running_loop().time() + 30
            while "completed" not in job_statuses or ("watched", "start") not in seen_events:
                assert asyncio.get_running_loop().time() < deadline, (seen_events, job_statuses)
                message = await ws.receive(timeout=30)
                assert message.type == WSMsgType.TEXT
                frame = json.loads(message.data)
                if frame["type"] == "container_event":
                    seen_events.append((frame["data"]["container_id"], frame["data"]["event"]))
                    assert frame["data"]["timestamp"].endswith("Z")
                elif frame["type"] == "job_status" and frame["data"]["job_id"] == job_id:
                    job_statuses.append(frame["data"]["status"])
            assert job_statuses[0] == "queued" and "running" in job_statuses
            assert (job_id, "start") in seen_events  # the job's container is a container too
            status, info = await cc.get("/api/system/info")
            assert info["active_connections"] == 1
