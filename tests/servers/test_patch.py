"""PATCH /containers/{id} against the real engine: limits applied live with `docker update` (same container,
same process), the rest at the next start (the container recreated once), validation as at create, the
power lock, and a daemon restart in between."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import pytest

from lightd.app import create_app
from tests.conftest import REGISTRY, TEST_IMAGE, Api, wait_for
from tests.servers.helpers import EventLog, create_server, get, wait_install, wait_state

MiB = 1024 * 1024
# Greets with $GREETING, echoes stdin, exits 0 on "quit".
TICKER = 'echo "hello $GREETING"; while read line; do echo "got $line"; [ "$line" = quit ] && exit 0; done'


def inspect(name: str) -> dict[str, Any]:
    result = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def cgroup_memory_limit(name: str) -> int:
    """The memory limit the kernel enforces on the container now (cgroup v2 or v1)."""
    out = subprocess.run(["docker", "exec", name, "sh", "-c",
                          "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
                         capture_output=True, text=True).stdout.strip()
    return int(out)


def cgroup_version() -> str:
    return subprocess.run(["docker", "info", "-f", "{{.CgroupVersion}}"], capture_output=True, text=True).stdout.strip()


async def patch(api: Api, internal_id: str, body: Any) -> tuple[int, Any]:
    return await api.call("PATCH", f"/containers/{internal_id}", json=body)


async def start(api: Api, internal_id: str) -> None:
    status, body = await api.post(f"/containers/{internal_id}/start")
    assert status == 202, body
    await wait_state(api, internal_id, "running")


async def stop(api: Api, internal_id: str) -> None:
    status, body = await api.post(f"/containers/{internal_id}/stop", params={"timeout": "10"})
    assert status == 202, body
    await wait_state(api, internal_id, "offline")


async def test_limits_apply_live_to_the_running_container(dapi, docker_config):
    await create_server(dapi, "live", startup_command=TICKER,
                        limits={"memory": 64 * MiB, "cpu": 0.5, "pids": 64})
    await start(dapi, "live")
    name = f"{docker_config.docker.container_prefix}live"
    before = inspect(name)
    assert before["HostConfig"]["Memory"] == 64 * MiB

    status, body = await patch(dapi, "live", {"limits": {"memory": 128 * MiB, "cpu": 1.0, "pids": 128, "disk": 10 * MiB}})
    assert status == 200, body
    assert sorted(body["applied"]) == ["limits.cpu", "limits.disk", "limits.memory", "limits.pids"]
    # the memory figure the process was started with (-Xmx${SERVER_MEMORY}M) changes with the next start
    assert body["on_next_start"] == ["environment.SERVER_MEMORY"]
    assert body["container"]["limits"] == {"memory": 128 * MiB, "cpu": 1.0, "pids": 128, "disk": 10 * MiB}
    assert body["container"]["state"] == "running"

    after = inspect(name)
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["State"]["Running"]
    host = after["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (
        128 * MiB, 128 * MiB, 1_000_000_000, 128)
    assert cgroup_memory_limit(name) == 128 * MiB  # the kernel enforces it on the running process
    status, usage = await dapi.get(f"/volumes/{body['container']['volume_id']}/usage")
    assert usage["disk_limit"] == 10 * MiB
    assert (await get(dapi, "live"))["limits"]["memory"] == 128 * MiB

    assert "SERVER_MEMORY=64" in after["Config"]["Env"]
    await stop(dapi, "live")
    await start(dapi, "live")
    again = inspect(name)
    assert "SERVER_MEMORY=128" in again["Config"]["Env"] and again["HostConfig"]["Memory"] == 128 * MiB


async def test_limits_of_a_stopped_server_apply_to_its_container(dapi, docker_config):
    await create_server(dapi, "stopped", limits={"memory": 64 * MiB})
    name = f"{docker_config.docker.container_prefix}stopped"
    container_id = inspect(name)["Id"]
    status, body = await patch(dapi, "stopped", {"limits": {"cpu": 0.25, "pids": 100}})
    assert status == 200, body
    assert body["applied"] == ["limits.cpu", "limits.pids"] and body["on_next_start"] == []
    host = inspect(name)["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 * MiB, 250_000_000, 100)
    # nothing was left for the start: the same container starts
    await start(dapi, "stopped")
    assert inspect(name)["Id"] == container_id


async def test_environment_and_startup_command_apply_at_the_next_start(dapi, dclient, docker_config):
    await create_server(dapi, "later", startup_command=TICKER, environment={"GREETING": "one"})
    events = EventLog(dclient.app, "later")
    await start(dapi, "later")
    await events.wait("console", lambda line: line == "hello one")
    name = f"{docker_config.docker.container_prefix}later"
    first = inspect(name)

    new_command = TICKER.replace("hello", "v2")
    status, body = await patch(dapi, "later", {"environment": {"GREETING": "two"}, "startup_command": new_command})
    assert status == 200, body
    assert body["applied"] == [] and body["on_next_start"] == ["environment", "startup_command"]
    assert body["container"]["startup_command"] == new_command
    # the running process and its container are untouched
    now = inspect(name)
    assert now["Id"] == first["Id"] and now["State"]["Running"] and "GREETING=one" in now["Config"]["Env"]
    assert (await get(dapi, "later"))["state"] == "running"

    await stop(dapi, "later")
    await start(dapi, "later")
    await events.wait("console", lambda line: line == "v2 two")
    assert any("recreating its container" in m for m in events.of("daemon_message"))
    second = inspect(name)
    assert second["Id"] != first["Id"] and "GREETING=two" in second["Config"]["Env"]
    # recreated once: the next start reuses it
    await stop(dapi, "later")
    await start(dapi, "later")
    assert inspect(name)["Id"] == second["Id"]


async def test_image_change_applies_at_the_next_start(dapi, docker_config):
    tag = f"lightd-test/busybox:patch-{secrets.token_hex(3)}"
    subprocess.run(["docker", "tag", TEST_IMAGE, tag], check=True, capture_output=True)
    try:
        await create_server(dapi, "img")
        name = f"{docker_config.docker.container_prefix}img"
        status, body = await patch(dapi, "img", {"image": tag})
        assert status == 200, body
        assert body["on_next_start"] == ["image"] and body["container"]["image"] == tag
        assert inspect(name)["Config"]["Image"] == TEST_IMAGE
        await start(dapi, "img")
        assert inspect(name)["Config"]["Image"] == tag

        # an image that cannot be pulled is refused before anything changes
        status, body = await patch(dapi, "img", {"image": f"{REGISTRY}/lightd-test/does-not-exist:1"})
        assert status == 400 and body["code"] == "validation_failed" and body["error"].startswith("image"), body
        assert (await get(dapi, "img"))["image"] == tag
    finally:
        subprocess.run(["docker", "rm", "-f", f"{docker_config.docker.container_prefix}img"], capture_output=True)
        subprocess.run(["docker", "rmi", tag], capture_output=True)


async def test_start_pattern_and_stop_are_in_force_at_once(dapi, dclient):
    await create_server(dapi, "pat", startup_command=TICKER)
    events = EventLog(dclient.app, "pat")
    await start(dapi, "pat")
    status, body = await patch(dapi, "pat", {"stop": {"type": "command", "value": "quit"}, "start_pattern": "hello"})
    assert status == 200, body
    assert body["applied"] == ["start_pattern", "stop"] and body["on_next_start"] == []
    # the stop of the process started before the PATCH already uses the new stop command
    await stop(dapi, "pat")
    assert "got quit" in events.of("console")
    view = await get(dapi, "pat")
    assert view["exit_code"] == 0 and "crashed" not in events.types()
    # a pattern that never matches keeps the next start in `starting`
    status, body = await patch(dapi, "pat", {"start_pattern": "never printed"})
    assert status == 200 and body["applied"] == ["start_pattern"], body
    events.close()
    events = EventLog(dclient.app, "pat")
    assert (await dapi.post("/containers/pat/start"))[0] == 202
    await events.wait("console", lambda line: line == "hello ")
    assert (await get(dapi, "pat"))["state"] == "starting"
    await dapi.post("/containers/pat/kill")
    await wait_state(dapi, "pat", "offline")


async def test_a_null_limit_goes_back_to_the_node_default(dapi, docker_config):
    await create_server(dapi, "default", startup_command=TICKER, limits={"memory": 64 * MiB})
    await start(dapi, "default")
    status, body = await patch(dapi, "default", {"limits": {"memory": None}})
    assert status == 200, body
    default = docker_config.docker.default_limits.memory
    assert body["container"]["limits"]["memory"] == default and "limits.memory" in body["applied"]
    assert inspect(f"{docker_config.docker.container_prefix}default")["HostConfig"]["Memory"] == default


async def test_a_removed_limit_applies_at_the_next_start(aiohttp_client, make_config, container_prefix, auth_headers):
    config = make_config(docker={"container_prefix": container_prefix, "default_limits": {"memory": None}})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    await create_server(api, "unlimit", startup_command=TICKER, limits={"memory": 64 * MiB})
    await start(api, "unlimit")
    name = f"{container_prefix}unlimit"
    status, body = await patch(api, "unlimit", {"limits": {"memory": None}})
    assert status == 200, body
    # the engine cannot lift a memory limit in place (0 means "unchanged" to `docker update`)
    assert body["applied"] == [] and body["on_next_start"] == ["limits.memory", "environment.SERVER_MEMORY"]
    assert body["container"]["limits"]["memory"] is None
    assert inspect(name)["HostConfig"]["Memory"] == 64 * MiB
    await stop(api, "unlimit")
    await start(api, "unlimit")
    assert inspect(name)["HostConfig"]["Memory"] == 0


@pytest.mark.skipif(cgroup_version() != "1", reason="cgroup v1 refuses a memory limit below the usage")
async def test_a_limit_the_engine_refuses_live_applies_at_the_next_start(dapi, docker_config):
    # 40 MiB in the container's tmpfs is charged to its memory cgroup and cannot be reclaimed without swap
    fill = "dd if=/dev/zero of=/tmp/fill bs=1M count=40 2>/dev/null; echo filled; " + TICKER
    await create_server(dapi, "refused", startup_command=fill, start_pattern="filled", limits={"memory": 128 * MiB})
    await start(dapi, "refused")
    name = f"{docker_config.docker.container_prefix}refused"
    status, body = await patch(dapi, "refused", {"limits": {"memory": 16 * MiB}})
    assert status == 200, body
    assert body["applied"] == [] and body["on_next_start"] == ["limits.memory", "environment.SERVER_MEMORY"]
    assert body["warnings"] and "not applied live" in body["warnings"][0]
    assert inspect(name)["HostConfig"]["Memory"] == 128 * MiB and inspect(name)["State"]["Running"]
    await dapi.post("/containers/refused/kill")
    await wait_state(dapi, "refused", "offline")
    await dapi.post("/containers/refused/start")
    await wait_for(lambda: inspect(name)["HostConfig"]["Memory"] == 16 * MiB, timeout=20)


@pytest.mark.parametrize("change, field", [
    ({"limits": {"memory": 1000}}, "limits.memory"),
    ({"limits": {"cpu": 1000}}, "limits.cpu"),  # more than this node's CPUs
    ({"limits": {"pids": 2}}, "limits.pids"),
    ({"limits": {"swap": 1}}, "limits.swap"),
    ({"internal_id": "other"}, "internal_id"),
    ({"ports": []}, "ports"),
    ({"volume_id": "x"}, "volume_id"),
    ({"image": "Not A Valid/Image"}, "image"),
    ({"image": None}, "image"),
    ({"startup_command": None}, "startup_command"),
    ({"startup_command": ""}, "startup_command"),
    ({"environment": {"1BAD": "x"}}, "environment"),
    ({"environment": None}, "environment"),
    ({"start_pattern": r"(a)\1"}, "start_pattern"),
    ({"stop": {"type": "signal", "value": "SIGBOGUS"}}, "stop"),
])
async def test_bad_changes_are_400_naming_the_field_and_change_nothing(dapi, change, field):
    await create_server(dapi, "strict", limits={"memory": 64 * MiB})
    before = await get(dapi, "strict")
    status, body = await patch(dapi, "strict", change)
    assert status == 400 and body["code"] == "validation_failed", body
    assert body["error"].startswith(field), body
    after = await get(dapi, "strict")
    assert after == before


async def test_patch_of_an_unknown_or_busy_server_is_refused(dapi):
    status, body = await patch(dapi, "nosuch", {"limits": {"memory": 64 * MiB}})
    assert status == 404 and body["code"] == "not_found"
    await create_server(dapi, "busy", ready=False, install_script="sleep 5")
    status, body = await patch(dapi, "busy", {"limits": {"memory": 64 * MiB}})
    assert status == 409, body
    await wait_install(dapi, "busy", "ready", timeout=30)
    # the lock was not kept: the next one goes through
    status, body = await patch(dapi, "busy", {"limits": {"pids": 99}})
    assert status == 200 and body["applied"] == ["limits.pids"], body
    status, body = await dapi.call("PATCH", "/containers/busy", data=b"[]", headers={"Content-Type": "application/json"})
    assert status == 400


async def test_a_change_left_for_the_next_start_survives_a_daemon_restart(aiohttp_client, docker_config, auth_headers):
    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    await create_server(api, "kept", startup_command=TICKER, environment={"GREETING": "before"})
    await start(api, "kept")
    status, body = await patch(api, "kept", {"environment": {"GREETING": "after"}})
    assert status == 200 and body["on_next_start"] == ["environment"], body
    await client.close()  # the daemon stops, the server runs on with the old environment

    client = await aiohttp_client(create_app(docker_config))
    api = Api(client, auth_headers)
    events = EventLog(client.app, "kept")
    assert (await get(api, "kept"))["state"] == "running"
    await stop(api, "kept")
    await start(api, "kept")
    await events.wait("console", lambda line: line == "hello after")
