"""Pause and unpause against the real Docker engine: the native routes, the console socket (stays attached,
shows `paused`), the power actions from `paused` (a stop by command thaws first), and a `docker pause` or
`docker unpause` outside lightd, seen through the engine's event stream."""

from __future__ import annotations

import asyncio
import subprocess

from lightd.events import Event
from lightd.servers.events import StateChanged
from lightd.sync import update_for
from tests.api.ws_helpers import connect
from tests.conftest import Api, wait_for
from tests.servers.helpers import EventLog, create_server, get, wait_state

# Echoes what it reads; `stop` typed on stdin ends it (exit 0).
ECHO = 'echo up; while read line; do [ "$line" = stop ] && echo bye && exit 0; echo "got $line"; done'


def inspect(name: str, fmt: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", fmt, name], capture_output=True, text=True).stdout.strip()


async def docker(*args: str) -> None:
    await asyncio.to_thread(subprocess.run, ["docker", *args], capture_output=True, check=True)


async def echo_server(api: Api, internal_id: str) -> None:
    await create_server(api, internal_id, startup_command=ECHO, stop={"type": "command", "value": "stop"})
    assert (await api.post(f"/containers/{internal_id}/start"))[0] == 202
    await wait_state(api, internal_id, "running")


async def logs(api: Api, internal_id: str) -> list[str]:
    return (await api.get(f"/containers/{internal_id}/logs", params={"lines": "50"}))[1]["lines"]


async def test_pause_and_unpause_keep_the_console(dapi, dclient, docker_config, node_token):
    await echo_server(dapi, "pz")
    name = f"{docker_config.docker.container_prefix}pz"
    console = await connect(dclient, "pz", node_token)
    status, body = await dapi.post("/containers/pz/pause")
    assert status == 202, body
    assert (await console.event("paused"))["type"] == "paused"
    assert (await get(dapi, "pz"))["state"] == "paused"
    assert inspect(name, "{{.State.Paused}}") == "true"
    await console.send("request_stats")
    frame = await console.until(lambda f: f["event"] == "stats" and f["data"]["state"] == "paused")
    assert frame["data"]["state"] == "paused"
    for path in ("/containers/pz/pause", "/containers/pz/start"):
        assert (await dapi.post(path))[0] == 409
    assert (await dapi.post("/containers/pz/commands", json={"command": "hi"}))[0] == 409
    assert (await dapi.get("/containers", params={"state": "paused"}))[1]["count"] == 1
    assert (await dapi.post("/containers/pz/unpause"))[0] == 202
    await console.event("running")
    assert inspect(name, "{{.State.Paused}}") == "false"
    # The console attached before the pause carries on both ways.
    assert (await dapi.post("/containers/pz/commands", json={"command": "after"}))[0] == 202
    await console.console_line("got after")
    assert (await dapi.post("/containers/pz/unpause"))[0] == 409
    await console.close()


async def test_a_stop_by_command_of_a_paused_server_thaws_it(dapi, dclient):
    await echo_server(dapi, "pstop")
    events = EventLog(dclient.app, "pstop")
    assert (await dapi.post("/containers/pstop/pause"))[0] == 202
    await wait_state(dapi, "pstop", "paused")
    assert (await dapi.post("/containers/pstop/stop", params={"timeout": "20"}))[0] == 202
    body = await wait_state(dapi, "pstop", "offline", timeout=30)
    assert body["exit_code"] == 0  # it read its stop command: no kill after the timeout
    assert "bye" in await logs(dapi, "pstop")
    assert "crashed" not in events.types()


async def test_restart_and_kill_of_a_paused_server(dapi, dclient):
    await create_server(dapi, "prk", startup_command="echo up; exec sleep 1000")
    assert (await dapi.post("/containers/prk/start"))[0] == 202
    await wait_state(dapi, "prk", "running")
    events = EventLog(dclient.app, "prk")
    assert (await dapi.post("/containers/prk/pause"))[0] == 202
    await wait_state(dapi, "prk", "paused")
    assert (await dapi.post("/containers/prk/restart"))[0] == 202
    await events.wait_type("stopping")
    await wait_state(dapi, "prk", "running")
    assert (await dapi.post("/containers/prk/pause"))[0] == 202
    await wait_state(dapi, "prk", "paused")
    assert (await dapi.post("/containers/prk/kill"))[0] == 202
    body = await wait_state(dapi, "prk", "offline")
    assert body["exit_code"] == 137
    assert "crashed" not in events.types()


async def test_a_pause_outside_lightd_is_seen_through_the_engine_events(dapi, dclient, docker_config):
    await create_server(dapi, "pout", startup_command="exec sleep 1000")
    assert (await dapi.post("/containers/pout/start"))[0] == 202
    await wait_state(dapi, "pout", "running")
    name = f"{docker_config.docker.container_prefix}pout"
    await docker("pause", name)
    await wait_state(dapi, "pout", "paused", timeout=10)
    await docker("unpause", name)
    await wait_state(dapi, "pout", "running", timeout=10)
    assert await wait_for(lambda: inspect(name, "{{.State.Running}}") == "true")


def test_remote_sync_sends_the_paused_state():
    update = update_for(Event("event", "s", StateChanged("paused"), ts=1.5))
    assert update is not None and update["status"] == "paused"
