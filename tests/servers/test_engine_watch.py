"""Crash detection from the engine's event stream (EngineWatch), against the real engine. The engine poll is
set to a minute in these tests: only the event stream can explain what they see within seconds."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lightd import keys
from lightd.app import create_app
from lightd.config import Config
from lightd.servers.server import Server
from tests.conftest import Api, wait_for
from tests.servers.helpers import EventLog, create_server, get, wait_state

POLL = 60.0  # never reached by a test here
PROMPT = 15.0  # "at once", generously (a loaded CI host): a quarter of the poll, which never runs here


@pytest.fixture
def watch_config(make_config: Callable[..., Config], container_prefix: str) -> Config:
    return make_config(docker={"container_prefix": container_prefix, "engine_poll_seconds": POLL})


@pytest.fixture
async def wclient(aiohttp_client: Callable[..., Any], watch_config: Config, no_blocking_calls: None) -> TestClient:
    return await aiohttp_client(create_app(watch_config))


@pytest.fixture
def wapi(wclient: TestClient, auth_headers: dict[str, str]) -> Api:
    return Api(wclient, auth_headers)


async def running_server(api: Api, internal_id: str) -> Server:
    await create_server(api, internal_id)
    assert (await api.post(f"/containers/{internal_id}/start"))[0] == 202
    await wait_state(api, internal_id, "running")
    return api.client.app[keys.SERVERS].get(internal_id)


async def detach(server: Server) -> None:
    """What an engine blip leaves behind: the console stream is gone and nothing re-attached (its reader
    task ends without handling an exit)."""
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == f"lightd:console:{server.id}"]
    task.cancel()
    await asyncio.wait([task])
    assert server.detached


async def docker(*args: str) -> None:
    await asyncio.to_thread(subprocess.run, ["docker", *args], capture_output=True, check=True)


async def test_a_container_killed_while_detached_is_a_crash_at_once(wapi: Api, wclient: TestClient, watch_config: Config):
    server = await running_server(wapi, "away")
    events = EventLog(wclient.app, "away")
    await detach(server)
    loop = asyncio.get_running_loop()
    await docker("kill", f"{watch_config.docker.container_prefix}away")
    killed = loop.time()
    await events.wait_type("crashed", timeout=PROMPT)
    assert loop.time() - killed < PROMPT
    body = await wait_state(wapi, "away", "offline", timeout=PROMPT)
    assert body["exit_code"] == 137
    await asyncio.sleep(1)
    assert events.types().count("crashed") == 1


async def test_one_crash_when_the_console_stream_and_the_event_both_see_the_exit(wapi: Api, wclient: TestClient, watch_config: Config):
    prefix = watch_config.docker.container_prefix
    for name in ("both-a", "both-b", "both-c"):
        await running_server(wapi, name)
    logs = {name: EventLog(wclient.app, name) for name in ("both-a", "both-b", "both-c")}
    await docker("kill", *(f"{prefix}{name}" for name in logs))
    for name, events in logs.items():
        await events.wait_type("crashed", timeout=PROMPT)
        assert (await wait_state(wapi, name, "offline", timeout=PROMPT))["exit_code"] == 137
    await asyncio.sleep(1.5)  # the later of the two paths has long arrived
    for name, events in logs.items():
        assert events.types().count("crashed") == 1, (name, events.types())
        assert events.types().count("exit") == 1, (name, events.types())


async def test_a_container_removed_behind_lightds_back_is_missing(wapi: Api, wclient: TestClient, watch_config: Config):
    prefix = watch_config.docker.container_prefix
    running = await running_server(wapi, "rm-running")
    stopped = await running_server(wapi, "rm-stopped")
    assert (await wapi.post("/containers/rm-stopped/stop"))[0] == 202
    await wait_state(wapi, "rm-stopped", "offline")
    events = EventLog(wclient.app, "rm-running")
    await docker("rm", "-f", f"{prefix}rm-running", f"{prefix}rm-stopped")
    await wait_for(lambda: running.container_missing and stopped.container_missing, timeout=PROMPT)
    assert (await get(wapi, "rm-stopped"))["container_missing"] is True
    body = await wait_state(wapi, "rm-running", "offline", timeout=PROMPT)
    assert body["container_missing"] is True
    await asyncio.sleep(1)
    assert events.types().count("crashed") == 1
    # A start makes the container again.
    assert (await wapi.post("/containers/rm-stopped/start"))[0] == 202
    body = await wait_state(wapi, "rm-stopped", "running")
    assert body["container_missing"] is False


async def test_crashes_are_seen_at_once_after_the_event_stream_reconnects(wapi: Api, wclient: TestClient, watch_config: Config):
    server = await running_server(wapi, "recon")
    monitor = wclient.app[keys.ENVIRONMENT].monitor
    first = await wait_for(lambda: monitor.stream)
    first.close()  # the event stream is cut; the engine stays up
    await wait_for(lambda: monitor.stream is not None and monitor.stream is not first, timeout=PROMPT)
    await asyncio.sleep(0.2)  # the reconcile that follows a reconnect
    events = EventLog(wclient.app, "recon")
    await detach(server)
    await docker("kill", f"{watch_config.docker.container_prefix}recon")
    await events.wait_type("crashed", timeout=PROMPT)
    assert events.types().count("crashed") == 1


async def test_a_container_started_behind_lightds_back_is_reattached(wapi: Api, wclient: TestClient, watch_config: Config):
    server = await running_server(wapi, "outside")
    assert (await wapi.post("/containers/outside/stop", params={"timeout": "5"}))[0] == 202
    await wait_state(wapi, "outside", "offline")
    events = EventLog(wclient.app, "outside")
    await docker("start", f"{watch_config.docker.container_prefix}outside")
    await wait_state(wapi, "outside", "running", timeout=PROMPT)
    await wait_for(lambda: server.attached, timeout=PROMPT)
    assert "crashed" not in events.types()
