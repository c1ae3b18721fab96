"""Upstream Lightd's client shapes, accepted as aliases (issue 11, item 12): console socket
`{"event","command"}` / `{"event","action"}`, `POST /auth/tokens {"ttl","remove_on_use"}` (single-use
tokens), compress `{"format","output_name"}` and decompress `{"archive_path","destination"}`,
`PUT .../use {"in_use": false}`, create `"mount": {"/c": "/h"}`, and `container_id` in the container view."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from lightd import keys
from lightd.app import create_app
from lightd.config import Config
from lightd.store import MIGRATIONS, Store
from lightd.timestamps import parse_rfc3339
from tests.api.ws_helpers import connect
from tests.conftest import VENDOR, Api, wait_for
from tests.servers.helpers import create_server, get, make_volume, wait_state

ECHO_LOOP = 'echo ready; while read line; do echo "got: $line"; done'


# -- console socket --------------------------------------------------------------------------------------
async def test_socket_accepts_upstream_command_and_action_fields(dapi, dclient, node_token):
    await create_server(dapi, "upws", startup_command=ECHO_LOOP)
    console = await connect(dclient, "upws", node_token)
    await console.ws.send_json({"event": "power", "action": "start"})
    await console.until(lambda f: "ready" in console.lines() and {"type": "running"} in console.of("event"))
    await console.ws.send_json({"event": "send_command", "command": "echo 'Hello World'\n"})
    await console.console_line("got: echo 'Hello World'")
    # documented `data` still wins when both are sent
    await console.ws.send_json({"event": "send_command", "data": "documented", "command": "ignored"})
    await console.console_line("got: documented")
    for bad in ({"event": "power", "action": "explode"}, {"event": "send_command"},
                {"event": "send_command", "command": ""}, {"event": "power", "action": ["start", 1], "x": 1}):
        await console.ws.send_json(bad)
        error = await console.until(lambda f: f["event"] in ("error", "event"))
        if bad.get("action") == ["start", 1]:  # a list carries its first item, as the other shapes do
            assert error["event"] == "error" and "already running" in error["data"]["message"], error
        else:
            assert error["event"] == "error", (bad, error)
    await console.ws.send_json({"event": "power", "action": "kill"})
    await console.event("offline")


# -- tokens ----------------------------------------------------------------------------------------------
async def test_upstream_token_request_with_ttl_string_and_single_use(api, client):
    before = time.time()
    status, body = await api.post("/auth/tokens", json={"ttl": "1h", "remove_on_use": True})
    assert status == 201, body
    assert body["remove_on_use"] is True and body["purpose"] == "all"
    assert before + 3600 - 5 <= parse_rfc3339(body["expires_at"]) <= time.time() + 3600 + 5
    _, listing = await api.get("/auth/tokens")
    assert [t["remove_on_use"] for t in listing["tokens"]] == [True]

    once = Api(client, {"Authorization": f"Bearer {body['token']}", "Accept": VENDOR})
    assert (await once.get("/network/ports"))[0] == 200
    status, refused = await once.get("/network/ports")
    assert status == 401 and refused["code"] == "unauthorized", refused
    assert (await api.get("/auth/tokens"))[1]["count"] == 0  # deleted at its first use

    # an ordinary temporary token is reusable
    status, body = await api.post("/auth/tokens", json={"ttl": 90})
    assert status == 201 and body["remove_on_use"] is False, body
    many = Api(client, {"Authorization": f"Bearer {body['token']}", "Accept": VENDOR})
    assert [(await many.get("/network/ports"))[0] for _ in range(3)] == [200, 200, 200]


async def test_a_single_use_token_wins_exactly_one_race(api, client):
    status, body = await api.post("/auth/tokens", json={"ttl": "10m", "remove_on_use": True})
    assert status == 201, body
    once = Api(client, {"Authorization": f"Bearer {body['token']}", "Accept": VENDOR})
    statuses = await asyncio.gather(*(once.get("/network/ports") for _ in range(20)))
    assert sorted(s for s, _ in statuses) == [200] + [401] * 19


@pytest.mark.parametrize("ttl, seconds", [("30s", 30), ("10m", 600), ("1h", 3600), ("1d", 86400), ("45", 45), (120, 120)])
async def test_ttl_durations(api, ttl, seconds):
    status, body = await api.post("/auth/tokens", json={"ttl": ttl})
    assert status == 201, body
    assert abs(parse_rfc3339(body["expires_at"]) - time.time() - seconds) < 5


@pytest.mark.parametrize("request_body, field", [
    ({"ttl": "2d"}, "ttl"),  # over tokens.max_ttl_seconds (1 day)
    ({"ttl": "0s"}, "ttl"),
    ({"ttl": "1 week"}, "ttl"),
    ({"ttl": True}, "ttl"),
    ({"ttl": "1h", "ttl_seconds": 60}, "(body)"),
    ({"remove_on_use": "yes"}, "remove_on_use"),
])
async def test_bad_ttl_and_remove_on_use_are_400_naming_the_field(api, request_body, field):
    status, body = await api.post("/auth/tokens", json=request_body)
    assert status == 400 and body["code"] == "validation_failed", body
    assert body["error"].startswith(field), body


async def test_tokens_from_before_the_single_use_migration_stay_reusable(tmp_path: Path):
    path = tmp_path / "old.db"
    before = next(i for i, step in enumerate(MIGRATIONS) if "remove_on_use" in step)
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute(f"INSERT INTO schema_version (version) VALUES ({before})")
        for step in MIGRATIONS[:before]:
            await db.executescript(step)
        await db.execute("INSERT INTO tokens (hash, container, purpose, created_at, expires_at, id) VALUES "
                         "('h1', NULL, 'all', ?, ?, 'abcd')", (time.time(), time.time() + 600))
    store = Store(path)
    await store.open()
    try:
        assert (await store.get_token("h1"))["remove_on_use"] == 0
        assert await store.consume_token("h1") is False and await store.get_token("h1") is not None
    finally:
        await store.close()


# -- volumes ---------------------------------------------------------------------------------------------
async def test_compress_output_name_and_decompress_archive_path(api, client):
    volume = await make_volume(api)
    base = f"/volumes/{volume}"
    for name, content in [("server.properties", "port=1"), ("world/level.dat", "lvl")]:
        status, body = await api.post(f"{base}/files", json={"path": name, "content": content})
        assert status in (200, 201), body
    status, body = await api.post(f"{base}/compress", json={"format": "zip", "output_name": "backup.zip"})
    assert status == 201, body
    root = client.app[keys.VOLUMES].path_of(volume)
    with zipfile.ZipFile(root / "backup.zip") as archive:
        names = set(archive.namelist())
    assert {"server.properties", "world/level.dat"} <= {n.rstrip("/") for n in names} and "backup.zip" not in names
    status, body = await api.post(f"{base}/compress", json={"format": "tar.gz", "output_name": "w.tgz", "path": "world"})
    assert status == 201, body

    status, body = await api.post(f"{base}/decompress", json={"archive_path": "backup.zip", "destination": "restored"})
    assert status == 200, body
    assert (root / "restored" / "world" / "level.dat").read_text() == "lvl"

    for endpoint, request_body in [
        ("compress", {"format": "zip", "output_name": "a.zip", "destination": "b.zip"}),
        ("compress", {"format": "zip", "output_name": ""}),
        ("decompress", {"archive_path": "backup.zip", "path": "other.zip"}),
        ("decompress", {"archive_path": ""}),
        ("decompress", {"destination": "x"}),
    ]:
        status, body = await api.post(f"{base}/{endpoint}", json=request_body)
        assert status == 400 and body["code"] == "validation_failed", (request_body, body)


# -- ports -----------------------------------------------------------------------------------------------
async def test_put_use_with_in_use_false_releases(dapi):
    assert (await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": 30500}))[0] == 201
    url = "/network/ports/127.0.0.1/30500/use"
    status, body = await dapi.put(url)
    assert status == 200 and body["in_use"] is True, body
    status, body = await dapi.put(url, json={"in_use": False})
    assert status == 200 and body["in_use"] is False, body
    status, body = await dapi.put(url, json={"in_use": True})
    assert status == 200 and body["in_use"] is True, body
    status, body = await dapi.put(url, json={"in_use": True})
    assert status == 409 and body["code"] == "port_in_use", body
    for bad in ({"in_use": "no"}, {"in_use": 0}, {"inuse": False}):
        status, body = await dapi.put(url, json=bad)
        assert status == 400 and body["code"] == "validation_failed", (bad, body)

    # a port a container holds is not freed by hand, in either form
    assert (await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": 30501}))[0] == 201
    await create_server(dapi, "holder", ports=[{"ip": "127.0.0.1", "port": 30501}])
    status, body = await dapi.put("/network/ports/127.0.0.1/30501/use", json={"in_use": False})
    assert status == 409 and "holder" in body["error"], body


# -- containers ------------------------------------------------------------------------------------------
@pytest.fixture
def open_root() -> Iterator[Path]:
    """Outside pytest's 0700 tmp tree, so the server's user can read a mounted directory."""
    root = Path(tempfile.mkdtemp(prefix="lightd-aliases-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def mount_api(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config], container_prefix: str,
                    open_root: Path, auth_headers: dict[str, str], no_blocking_calls: None) -> Api:
    shared = open_root / "shared"
    shared.mkdir(mode=0o755)
    (shared / "hello.txt").write_text("hello from the host\n")
    (shared / "hello.txt").chmod(0o644)
    config = make_config(data_dir=str(open_root / "data"),
                         docker={"container_prefix": container_prefix, "allowed_mounts": [str(shared)]})
    return Api(await aiohttp_client(create_app(config)), auth_headers)


async def test_create_with_a_mount_map_and_container_id_in_the_view(mount_api, open_root, container_prefix):
    shared = str(open_root / "shared")
    await create_server(mount_api, "mapped", mount={"/data/extra": shared},
                        startup_command="cat /data/extra/hello.txt; touch /data/extra/w 2>&1 || true; sleep 1000")
    view = await get(mount_api, "mapped")
    assert view["mount"] == [{"source": shared, "target": "/data/extra", "read_only": True}]
    # container_id is the Docker name, which the engine accepts wherever it takes an id
    assert view["container_id"] == view["name"] == f"{container_prefix}mapped"
    inspected = subprocess.run(["docker", "inspect", "-f", "{{.Name}}", view["container_id"]], capture_output=True,
                               text=True)
    assert inspected.stdout.strip() == "/" + view["name"]
    _, listing = await mount_api.get("/containers")
    assert [c["container_id"] for c in listing["containers"]] == [view["name"]]

    assert (await mount_api.post("/containers/mapped/start"))[0] == 202
    await wait_state(mount_api, "mapped", "running")

    async def lines() -> list[str]:
        return (await mount_api.get("/containers/mapped/logs"))[1]["lines"]

    await wait_for(lambda: _has(lines(), "hello from the host"))
    await wait_for(lambda: _has(lines(), "Read-only file system"))  # read-only, as in the list form
    assert not (open_root / "shared" / "w").exists()


async def _has(lines: Any, text: str) -> bool:
    return any(text in line for line in await lines)


async def test_mount_map_is_checked_as_the_list_form(mount_api, open_root):
    volume = await make_volume(mount_api)
    for mount, fragment in [({"/data": "/etc"}, "allowed mount"), ({"/proc/x": str(open_root / "shared")}, "mount"),
                            ({"relative": str(open_root / "shared")}, "absolute"), ({"/x": 5}, "mount")]:
        status, body = await mount_api.post("/containers", json={
            "internal_id": "badmount", "image": "lightd-test/busybox:latest", "volume_id": volume,
            "startup_command": "true", "mount": mount})
        assert status == 400 and body["code"] == "validation_failed" and fragment in body["error"], (mount, body)
