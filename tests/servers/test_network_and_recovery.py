"""Ports, reinstall, rebind, delete, image pull, daemon restart and bad input, against the real engine."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest

from lightd import keys
from lightd.app import create_app
from tests.conftest import REGISTRY, Api, wait_for
from tests.servers.helpers import EventLog, create_server, get, make_volume, wait_install, wait_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_from(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.settimeout(2)
        return conn.recv(100)


async def port_answers(port: int, expected: bytes) -> bool:
    try:
        return (await asyncio.to_thread(read_from, port)).strip() == expected
    except OSError:
        return False


async def add_port(api: Api, port: int) -> None:
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": port})
    assert status == 201, body


async def pool_entry(api: Api, port: int) -> dict:
    return (await api.get(f"/network/ports/127.0.0.1/{port}"))[1]


SERVE = "while true; do echo pong-$SERVER_PORT | nc -l -p $SERVER_PORT; done"


async def test_port_published_reachable_and_rebind_moves_it(dapi):
    old, new = free_port(), free_port()
    await add_port(dapi, old)
    await add_port(dapi, new)
    await create_server(dapi, "net", startup_command=SERVE, ports=[{"ip": "127.0.0.1", "port": old}])
    assert (await pool_entry(dapi, old))["container"] == "net"
    await dapi.post("/containers/net/start")
    await wait_state(dapi, "net", "running")
    await wait_for(lambda: port_answers(old, f"pong-{old}".encode()), timeout=15)

    status, body = await dapi.post("/containers/net/rebind-network", json={"ports": [{"ip": "127.0.0.1", "port": new}]})
    assert status == 202, body
    await wait_for(lambda: port_answers(new, f"pong-{new}".encode()), timeout=30)
    assert not await port_answers(old, f"pong-{old}".encode())
    assert (await pool_entry(dapi, old))["in_use"] is False
    assert (await pool_entry(dapi, new))["container"] == "net"
    assert (await get(dapi, "net"))["ports"] == [{"ip": "127.0.0.1", "port": new, "protocol": "tcp"}]
    # the pool refuses to delete a port a container holds
    assert (await dapi.delete(f"/network/ports/127.0.0.1/{new}"))[0] == 409


async def test_rebind_refuses_ports_not_free(dapi):
    port, taken = free_port(), free_port()
    await add_port(dapi, port)
    await add_port(dapi, taken)
    await dapi.put(f"/network/ports/127.0.0.1/{taken}/use")
    await create_server(dapi, "rb", ports=[{"ip": "127.0.0.1", "port": port}])
    status, body = await dapi.post("/containers/rb/rebind-network", json={"ports": [{"ip": "127.0.0.1", "port": taken}]})
    assert status == 409, body
    status, body = await dapi.post("/containers/rb/rebind-network", json={"ports": [{"ip": "127.0.0.1", "port": 1}]})
    assert status == 400 and "not in the port pool" in body["error"]
    assert (await pool_entry(dapi, port))["container"] == "rb"


async def test_reinstall_keeps_volume_files(dapi, dclient):
    volume = await make_volume(dapi)
    status, _ = await dapi.post(f"/volumes/{volume}/files", json={"path": "world/level.dat", "content": "precious"})
    assert status in (200, 201)
    await create_server(dapi, "re", volume_id=volume, install_script="echo v1 > version.txt")
    events = EventLog(dclient.app, "re")
    status, body = await dapi.post("/containers/re/reinstall", json={"install_script": "echo v2 > version.txt"})
    assert status == 202, body
    await events.wait_type("installing")
    await wait_install(dapi, "re", "ready")
    path = dclient.app[keys.VOLUMES].path_of(volume)
    assert (path / "version.txt").read_text() == "v2\n"
    assert (path / "world" / "level.dat").read_text() == "precious"


async def test_delete_removes_container_releases_ports_keeps_volume(dapi, dclient, docker_config):
    port = free_port()
    await add_port(dapi, port)
    volume = await make_volume(dapi)
    await create_server(dapi, "gone", volume_id=volume, ports=[{"ip": "127.0.0.1", "port": port}])
    await dapi.post("/containers/gone/start")
    await wait_state(dapi, "gone", "running")
    status, body = await dapi.delete("/containers/gone")
    assert status == 200, body
    assert (await dapi.get("/containers/gone"))[0] == 404
    name = f"{docker_config.docker.container_prefix}gone"
    assert subprocess.run(["docker", "inspect", name], capture_output=True).returncode != 0
    assert (await pool_entry(dapi, port))["in_use"] is False
    assert (await dapi.get(f"/volumes/{volume}"))[0] == 200


async def test_volume_in_use_cannot_be_deleted(dapi):
    volume = await make_volume(dapi)
    await create_server(dapi, "holder", volume_id=volume)
    status, body = await dapi.delete(f"/volumes/{volume}")
    assert status == 409, body


async def test_pull_from_local_registry_with_progress(dapi, dclient):
    image = f"{REGISTRY}/lightd-test/busybox:latest"
    subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
    events = EventLog(dclient.app, "pulled")
    await create_server(dapi, "pulled", image=image)
    progress = [e for e in events.of("event") if e["type"] == "pull_progress"]
    assert progress and any("Pull complete" in e["status"] or "Downloaded" in e["status"] for e in progress)
    assert any(f"Pulled image {image}" in m for m in events.of("daemon_message"))
    subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


async def test_pull_of_missing_image_fails_install(dapi):
    await create_server(dapi, "nopull", ready=False, image=f"{REGISTRY}/lightd-test/does-not-exist:1")
    body = await wait_install(dapi, "nopull", "failed")
    assert "does-not-exist" in body["install_error"]


async def test_daemon_restart_reattaches_running_server(aiohttp_client, docker_config, auth_headers):
    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    await create_server(api, "survivor", startup_command="i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done")
    await api.post("/containers/survivor/start")
    await wait_state(api, "survivor", "running")
    await asyncio.sleep(0.5)
    await client.close()  # the daemon stops; the container must not

    name = f"{docker_config.docker.container_prefix}survivor"
    started = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", name], capture_output=True, text=True).stdout
    assert subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True).stdout.strip() == "true"

    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    events = EventLog(client.app, "survivor")
    body = await get(api, "survivor")
    assert body["state"] == "running"
    # history read back from Docker's log, and new lines keep arriving after the restart
    _, logs = await api.get("/containers/survivor/logs", params={"lines": "5"})
    assert logs["lines"] and logs["lines"][-1].startswith("tick ")
    await events.wait("console", lambda line: line.startswith("tick "), timeout=10)
    assert subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", name], capture_output=True, text=True).stdout == started
    # still controllable
    await api.post("/containers/survivor/stop", params={"timeout": "5"})
    await wait_state(api, "survivor", "offline", timeout=20)
    assert "crashed" not in events.types()


async def test_interrupted_install_is_failed_after_restart(aiohttp_client, docker_config, auth_headers):
    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    await create_server(api, "halfway", ready=False, install_script="sleep 30")
    await wait_for(lambda: subprocess.run(
        ["docker", "inspect", f"{docker_config.docker.container_prefix}halfway-installer"], capture_output=True
    ).returncode == 0, timeout=20)
    await client.close()
    client = await aiohttp_client(create_app(docker_config))
    body = await get(Api(client, auth_headers), "halfway")
    assert body["install_state"] == "failed" and "interrupted" in body["install_error"]


@pytest.mark.parametrize(
    "change, status, word",
    [
        ({"volume_id": "00000000-0000-4000-8000-000000000000"}, 400, "volume_id"),
        ({"ports": [{"ip": "127.0.0.1", "port": 1}]}, 400, "port pool"),
        ({"start_pattern": "(unclosed"}, 400, "start_pattern"),
        ({"image": "Not A/Valid:Image!"}, 400, "image"),
        ({"image": "; rm -rf /"}, 400, "image"),
        ({"internal_id": "../etc"}, 400, "internal_id"),
        ({"internal_id": "x" * 64}, 400, "internal_id"),
        ({"limits": {"memory": 0}}, 400, "limits.memory"),
        ({"limits": {"cpu": -1}}, 400, "limits.cpu"),
        ({"startup_command": ""}, 400, "startup_command"),
        ({"mount": [{"source": "/etc", "target": "/mnt/etc"}]}, 400, "mount"),
        ({"stop": {"type": "signal", "value": "SIGNOPE"}}, 400, "stop"),
        ({"unknown_field": 1}, 400, "unknown_field"),
    ],
)
async def test_bad_create_input_is_4xx_and_creates_nothing(dapi, docker_config, change, status, word):
    volume = await make_volume(dapi)
    body = {"internal_id": "bad-input", "image": "lightd-test/busybox:latest", "volume_id": volume,
            "startup_command": "sleep 1", **change}
    answer_status, answer = await dapi.post("/containers", json=body)
    assert answer_status == status, answer
    assert word in answer["error"]
    _, listing = await dapi.get("/containers")
    assert listing["count"] == 0
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=lightd.prefix={docker_config.docker.container_prefix}"],
                         capture_output=True, text=True).stdout.split()
    assert ids == []


async def test_port_in_use_and_duplicate_id_are_409(dapi):
    port = free_port()
    await add_port(dapi, port)
    await create_server(dapi, "first", ports=[{"ip": "127.0.0.1", "port": port}])
    volume = await make_volume(dapi)
    base = {"image": "lightd-test/busybox:latest", "volume_id": volume, "startup_command": "sleep 1"}
    status, body = await dapi.post("/containers", json={**base, "internal_id": "second", "ports": [{"ip": "127.0.0.1", "port": port}]})
    assert status == 409 and "in use" in body["error"]
    status, body = await dapi.post("/containers", json={**base, "internal_id": "first"})
    assert status == 409 and "already exists" in body["error"]
    assert (await dapi.get("/containers/second"))[0] == 404


async def test_docker_unreachable_is_503_and_daemon_keeps_serving(aiohttp_client, make_config, auth_headers, tmp_path):
    config = make_config(docker={"socket": f"unix://{tmp_path}/no-docker.sock", "engine_poll_seconds": 0.2})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    volume = await make_volume(api)
    status, body = await api.post("/containers", json={"internal_id": "x", "image": "lightd-test/busybox:latest",
                                                      "volume_id": volume, "startup_command": "sleep 1"})
    assert status == 503 and "Docker" in body["error"]
    assert (await api.get("/containers"))[0] == 200
    assert (await api.get("/api/v1/public/ping"))[0] == 200


async def test_unknown_container_routes_are_404(dapi):
    for method, path in [("GET", "/containers/nope"), ("POST", "/containers/nope/start"), ("POST", "/containers/nope/kill"),
                         ("DELETE", "/containers/nope"), ("GET", "/containers/nope/logs")]:
        status, body = await dapi.call(method, path)
        assert status == 404 and "error" in body, (method, path, body)
    status, body = await dapi.post("/containers/nope/commands", json={"command": "x"})
    assert status == 404


async def test_install_left_installing_by_a_crashed_daemon_is_failed(aiohttp_client, docker_config, auth_headers):
    """A daemon killed with -9 mid-install leaves `installing` in the store: the next start marks it failed."""
    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    volume = await make_volume(api)
    spec = {"internal_id": "orphan", "image": "lightd-test/busybox:latest", "volume_id": volume, "startup_command": "sleep 1"}
    await client.app[keys.STORE].insert_container("orphan", volume, spec, "installing")
    await client.close()
    client = await aiohttp_client(create_app(docker_config))
    body = await get(Api(client, auth_headers), "orphan")
    assert body["install_state"] == "failed" and "daemon restart" in body["install_error"]


async def test_listing_follows_every_change(dapi):
    """GET /containers is served from a cached encoding: it must still show each change at once."""
    await create_server(dapi, "listed")
    _, first = await dapi.get("/containers")
    assert [(c["internal_id"], c["state"]) for c in first["containers"]] == [("listed", "offline")]
    await dapi.post("/containers/listed/start")
    await wait_state(dapi, "listed", "running")
    _, listing = await dapi.get("/containers")
    assert listing["containers"][0]["state"] == "running"
    await dapi.post("/containers/listed/kill")
    await wait_state(dapi, "listed", "offline")
    _, listing = await dapi.get("/containers")
    assert listing["containers"][0]["state"] == "offline" and listing["containers"][0]["exit_code"] == 137
    await dapi.delete("/containers/listed")
    _, listing = await dapi.get("/containers")
    assert listing == {"containers": [], "count": 0, "total": 0, "next_cursor": None}
