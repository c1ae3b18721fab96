"""Stats: one sampling round for every running server on the timer wheel (no task per server; the engine's
stream only as the fallback), GET /containers/:id/stats, the final zeroed sample."""

from __future__ import annotations

import asyncio

from lightd import keys
from tests.conftest import wait_for
from tests.servers.helpers import EventLog, create_server, wait_state


def sampler_tasks(app, server_id: str) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"lightd:stats:{server_id}" and not t.done()]


async def test_stats_of_a_running_container(dapi, dclient):
    # 256 KiB in the volume (disk usage is cached: written before the first read) and a busy process
    await create_server(
        dapi, "st", startup_command="echo up; while true; do : ; done", limits={"memory": 128 * 1024 * 1024},
        install_script="dd if=/dev/zero of=/home/container/blob bs=1024 count=256\n",
    )
    status, body = await dapi.get("/containers/st/stats")
    assert status == 200, body
    assert body["state"] == "offline" and body["memory_bytes"] == 0 and body["uptime"] == 0
    events = EventLog(dclient.app, "st")
    await dapi.post("/containers/st/start")
    await wait_state(dapi, "st", "running")

    async def sampled():
        status, body = await dapi.get("/containers/st/stats")
        # a busy loop: most of one core once Docker has two samples of it
        return body if body["memory_bytes"] > 0 and body["cpu_absolute"] > 10 else None

    body = await wait_for(sampled, timeout=20, interval=0.5)
    assert body["internal_id"] == "st" and body["state"] == "running"
    assert 0 < body["memory_bytes"] <= body["memory_limit_bytes"]
    assert body["memory_limit_bytes"] >= 128 * 1024 * 1024
    assert body["uptime"] > 0 and set(body["network"]) == {"rx_bytes", "tx_bytes"}
    assert body["disk_bytes"] >= 256 * 1024
    # published on the bus as well, at most every stats_interval_seconds
    await events.wait("stats", lambda d: d["state"] == "running" and d["memory_bytes"] > 0, timeout=20)
    assert not sampler_tasks(dclient.app, "st")  # read in the batch: no stream, no task of its own
    assert dclient.app[keys.STATS].active("st")

    await dapi.post("/containers/st/kill")
    await wait_state(dapi, "st", "offline")
    final = await events.wait("stats", lambda d: d["state"] == "offline", timeout=10)
    assert final["memory_bytes"] == 0 and final["cpu_absolute"] == 0 and final["uptime"] == 0
    await wait_for(lambda: not sampler_tasks(dclient.app, "st"), timeout=5)
    assert not dclient.app[keys.STATS].active("st")
    status, body = await dapi.get("/containers/st/stats")
    assert body["state"] == "offline" and body["memory_bytes"] == 0
    events.close()


async def test_stats_interval_bounds_publishing(dapi, dclient):
    await create_server(dapi, "often")
    events = EventLog(dclient.app, "often")
    await dapi.post("/containers/often/start")
    await wait_state(dapi, "often", "running")
    await events.wait("stats", lambda d: d["memory_bytes"] > 0, timeout=20)
    await asyncio.sleep(4.5)
    samples = [d for d in events.of("stats") if d["state"] == "running"]
    interval = dclient.app[keys.CONFIG].console.stats_interval_seconds
    # Docker samples about once a second; with a 2 s interval only every other one is published.
    assert 1 <= len(samples) <= 4.5 / (interval * 0.9) + 2
    events.close()


async def test_one_sampler_survives_restart(dapi, dclient):
    await create_server(dapi, "rs")
    await dapi.post("/containers/rs/start")
    await wait_state(dapi, "rs", "running")
    await wait_for(lambda: dclient.app[keys.STATS].active("rs"), timeout=5)
    status, body = await dapi.post("/containers/rs/restart", params={"timeout": "2"})
    assert status == 202, body

    async def sampled_again():
        server = dclient.app[keys.SERVERS].get("rs")
        return server.state == "running" and server.latest_stats is not None

    await wait_for(sampled_again, timeout=40, interval=0.2)
    assert not sampler_tasks(dclient.app, "rs") and dclient.app[keys.STATS].active("rs")


async def test_stats_of_unknown_container_is_404(dapi):
    status, body = await dapi.get("/containers/nope/stats")
    assert status == 404 and "error" in body


async def test_docker_stats_stream_is_the_fallback(aiohttp_client, make_config, container_prefix, auth_headers):
    # stats_source "docker": what a host whose cgroup files cannot be read gets — one stream per server.
    from lightd.app import create_app
    from tests.conftest import Api

    config = make_config(docker={"container_prefix": container_prefix, "stats_source": "docker"})
    client = await aiohttp_client(create_app(config))
    api = Api(client, auth_headers)
    await create_server(api, "fb", startup_command="echo up; while true; do : ; done")
    await api.post("/containers/fb/start")
    await wait_state(api, "fb", "running")

    async def sampled():
        body = (await api.get("/containers/fb/stats"))[1]
        return body if body["memory_bytes"] > 0 and body["cpu_absolute"] > 10 else None

    body = await wait_for(sampled, timeout=20, interval=0.5)
    assert body["state"] == "running" and set(body["network"]) == {"rx_bytes", "tx_bytes"}
    assert len(sampler_tasks(client.app, "fb")) == 1
    status, system = await api.get("/system")
    assert system["stats"] == {"source": "docker_stats", "stream_fallbacks": 1}
    await api.post("/containers/fb/kill")
    await wait_state(api, "fb", "offline")
    await wait_for(lambda: not sampler_tasks(client.app, "fb"), timeout=5)
