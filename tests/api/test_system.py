"""GET /system against the real engine: versions, storage driver, CPUs, memory, the disk of data_dir, servers by
state and install state, the port pool; with the engine unreachable, 200 with `engine: null` and the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import psutil

from lightd import __version__
from lightd.app import create_app
from tests.conftest import Api, wait_for
from tests.servers.helpers import create_server, wait_state
from tests.servers.test_network_and_recovery import free_port


def docker_format(command: str, fmt: str) -> str:
    return subprocess.run(["docker", command, "-f", fmt], capture_output=True, text=True).stdout.strip()


async def test_system_reports_the_node(dapi, docker_config):
    ports = sorted({free_port() for _ in range(10)})[:3]
    for port in ports:
        assert (await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": port}))[0] == 201
    await create_server(dapi, "sys-run", ports=[{"ip": "127.0.0.1", "port": ports[0]}])
    await create_server(dapi, "sys-off")
    await create_server(dapi, "sys-inst", ready=False, install_script="sleep 5")
    assert (await dapi.post("/containers/sys-run/start"))[0] == 202
    await wait_state(dapi, "sys-run", "running")

    status, body = await dapi.get("/system")
    assert status == 200, body
    assert body["version"] == __version__
    assert body["engine_error"] is None
    engine = body["engine"]
    assert engine["version"] == docker_format("version", "{{.Server.Version}}")
    assert engine["api_version"] == docker_format("version", "{{.Server.APIVersion}}")
    assert engine["storage_driver"] == docker_format("info", "{{.Driver}}")
    assert engine["cpus"] >= 1 and engine["memory_bytes"] > 0

    assert body["cpus"] == os.cpu_count()
    assert body["memory"]["total_bytes"] == psutil.virtual_memory().total
    assert 0 < body["memory"]["available_bytes"] <= body["memory"]["total_bytes"]
    disk = shutil.disk_usage(docker_config.data_dir)
    assert body["disk"]["path"] == str(docker_config.data_dir)
    assert body["disk"]["total_bytes"] == disk.total
    assert body["disk"]["used_bytes"] + body["disk"]["free_bytes"] <= disk.total
    assert abs(body["disk"]["free_bytes"] - disk.free) < 512 * 1024 * 1024  # other tests write meanwhile

    servers = body["servers"]
    assert servers["total"] == 3
    assert servers["state"] == {"offline": 2, "starting": 0, "running": 1, "stopping": 0, "paused": 0,
                                "restoring": 0, "transferring": 0}
    assert servers["install_state"] == {"installing": 1, "ready": 2, "failed": 0}
    assert body["ports"] == {"total": 3, "free": 2, "in_use": 1}
    # Stats from the cgroup files of the version mounted here, once the first round asked the engine
    # ("detecting" until then: never a guess).
    version = "cgroup_v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "cgroup_v1"
    assert body["stats"]["source"] in (version, "detecting")

    async def detected() -> dict[str, Any] | None:
        stats = (await dapi.get("/system"))[1]["stats"]
        return stats if stats["source"] != "detecting" else None

    assert await wait_for(detected, timeout=30) == {"source": version, "stream_fallbacks": 0}


async def test_system_answers_without_the_engine(aiohttp_client, make_config, auth_headers, tmp_path):
    config = make_config(docker={"socket": f"unix://{tmp_path}/no-engine.sock", "container_prefix": "lightdtest-none-"})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    status, body = await api.get("/system")
    assert status == 200, body
    assert body["engine"] is None and "unreachable" in body["engine_error"]
    assert body["version"] == __version__ and body["cpus"] == os.cpu_count()
    assert body["servers"]["total"] == 0 and body["ports"]["total"] == 0
    assert body["disk"]["total_bytes"] > 0


async def test_system_reads_no_query_parameter(api):
    status, body = await api.get("/system", params={"verbose": "1"})
    assert status == 400 and body["code"] == "validation_failed" and "verbose" in body["error"]
