"""Container Codes data its real UI shows, against the real Docker engine: pause and unpause, the image a
client asked for (not the one lightd maps it to), a job's output file under both of its paths, and the
request id on file downloads and job output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lightd import keys
from tests.compat.test_container_codes import CC, _form, assert_error, wait_job
from tests.conftest import TEST_IMAGE, wait_for

ASKED = "nginx:latest"


@pytest.fixture
async def cc(serve_front_end: Callable[..., Any], container_prefix: str) -> CC:
    return await serve_front_end(CC, "container_codes", bearer=True, docker={
        "container_prefix": container_prefix, "engine_poll_seconds": 1.0, "image_map": {ASKED: TEST_IMAGE}})


async def test_pause_and_unpause(cc: CC):
    status, body = await cc.post("/api/containers", json={"name": "pz", "image": TEST_IMAGE, "command": "sleep 1000"})
    assert status == 201, body
    status, body = await cc.post("/api/containers/pz/pause")
    assert (status, body) == (200, {"id": "pz", "status": "paused"})
    status, body = await cc.get("/api/containers/pz")
    assert body["status"] == "paused"
    assert (await cc.api.get("/containers/pz"))[1]["state"] == "paused"
    status, listing = await cc.get("/api/containers", params={"status": "paused"})
    assert [c["id"] for c in listing["containers"]] == ["pz"]
    assert (await cc.get("/api/containers", params={"status": "running"}))[1]["containers"] == []
    for action in ("pause", "start"):
        status, body = await cc.post(f"/api/containers/pz/{action}")
        assert_error(status, body, 409, "CONFLICT")
    status, body = await cc.post("/api/containers/pz/unpause")
    assert (status, body) == (200, {"id": "pz", "status": "running"})
    status, body = await cc.post("/api/containers/pz/unpause")
    assert_error(status, body, 409, "CONFLICT")
    # a paused container stops (lightd thaws it first)
    assert (await cc.post("/api/containers/pz/pause"))[0] == 200
    status, body = await cc.post("/api/containers/pz/stop", params={"timeout": "10"})
    assert (status, body["status"]) == (200, "exited")
    status, body = await cc.post("/api/containers/ghost/pause")
    assert_error(status, body, 404, "CONTAINER_NOT_FOUND")


async def test_the_image_asked_for_is_shown_and_filtered_on(cc: CC):
    status, body = await cc.post("/api/containers", json={"name": "web", "image": ASKED, "start": False})
    assert status == 201, body
    assert (body["image"], body["runtime_image"]) == (ASKED, TEST_IMAGE)
    status, body = await cc.get("/api/containers/web")
    assert (body["image"], body["runtime_image"]) == (ASKED, TEST_IMAGE)
    assert (await cc.api.get("/containers/web"))[1]["image"] == TEST_IMAGE  # the core runs the mapped one
    for image in (ASKED, "nginx"):
        status, listing = await cc.get("/api/containers", params={"image": image})
        assert [(c["id"], c["image"]) for c in listing["containers"]] == [("web", ASKED)], image
    assert (await cc.get("/api/containers", params={"image": "busybox"}))[1]["containers"] == []
    # An image changed behind the front end's back is what it shows from then on.
    status, body = await cc.api.call("PATCH", "/containers/web", json={"image": "lightd-test/busybox"})
    assert status == 200, body
    assert (await cc.get("/api/containers/web"))[1]["image"] == "lightd-test/busybox"
    store = cc.main.app[keys.COMPAT_FRONT_ENDS]["container_codes"].store
    assert await cc.delete("/api/containers/web") == (200, {"id": "web", "deleted": True})
    assert "web" not in await store.asked_images()

    # A job's container shows the image its job asked for, while it runs.
    status, body = await cc.post("/api/jobs", json={"name": "long", "image": ASKED, "command": ["sleep", "300"]})
    assert status == 202, body
    job_id = body["job_id"]

    async def job_listed() -> Any:
        listing = (await cc.get("/api/containers", params={"image": ASKED}))[1]["containers"]
        return [c for c in listing if c["id"] == job_id]

    [view] = await wait_for(job_listed, timeout=30)
    assert view["runtime_image"] == TEST_IMAGE
    assert (await cc.post(f"/api/jobs/{job_id}/cancel"))[1]["status"] == "cancelled"
    assert job_id not in await store.asked_images()


async def test_job_output_under_both_paths_and_request_ids(cc: CC):
    status, body = await cc.post("/api/jobs", json={
        "name": "outputs", "image": TEST_IMAGE, "output_patterns": ["/output/*.json"],
        "command": ["sh", "-c", "mkdir -p output && echo '{\"n\": 1}' > output/out.json"],
    })
    assert status == 202, body
    job_id = body["job_id"]
    job = await wait_job(cc, job_id, {"completed", "failed"})
    assert job["output_files"] == ["output/out.json"], job
    for path in ("output/out.json", "out.json"):
        async with cc.http.get(f"{cc.base}/api/jobs/{job_id}/output/{path}", headers={"X-Request-Id": "dl-1"}) as resp:
            assert resp.status == 200 and await resp.read() == b'{"n": 1}\n', path
            assert resp.headers["X-Request-Id"] == "dl-1"
        async with cc.http.get(f"{cc.base}/api/jobs/{job_id}/output/{path}", headers={"Range": "bytes=1-2"}) as resp:
            assert resp.status == 206 and await resp.read() == b'"n'
            assert resp.headers["X-Request-Id"].startswith("req_")
    async with cc.http.get(f"{cc.base}/api/jobs/{job_id}/output") as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"].startswith("req_")
    for missing in ("output/nope.json", "nope.json", "input/data.csv"):
        status, body = await cc.get(f"/api/jobs/{job_id}/output/{missing}")
        error = assert_error(status, body, 404, "NOT_FOUND")
        assert error["details"]["job_id"] == job_id
    status, body = await cc.get("/api/jobs/job_nope/output/out.json")
    assert_error(status, body, 404, "JOB_NOT_FOUND")


async def test_file_downloads_carry_the_request_id(cc: CC):
    status, _ = await cc.post("/api/files/upload", data=_form(b"0123456789", "/docs/report.txt"))
    assert status == 201
    url = cc.base + "/api/files/download/docs/report.txt"
    async with cc.http.get(url) as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"].startswith("req_")
    async with cc.http.get(url, headers={"Range": "bytes=2-4", "X-Request-Id": "range-7"}) as resp:
        assert resp.status == 206 and resp.headers["X-Request-Id"] == "range-7"
    # mounted on the main port as well
    async with cc.main.get("/compat/container-codes/api/files/download/docs/report.txt",
                           headers={"Authorization": f"Bearer {cc.token}"}) as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"].startswith("req_")
    async with cc.http.get(cc.base + "/api/files/download/nope.txt") as resp:
        body = await resp.json()
        assert resp.headers.getall("X-Request-Id") == [body["error"]["request_id"]]  # once, not twice
