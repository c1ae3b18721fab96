"""Recovery after kill -9 against the real engine (issue 17 item 3): the restarted daemon answers before its
servers are compared with the engine, then re-attaches every console in the background (one list, bounded
concurrency: `docker.recovery_concurrency`), reports it in GET /system, and every console streams again; a
server killed while the daemon was away is one crash with its real exit code; an action on a server right
after the restart works. The fast version on the in-memory engine: tests/servers/test_recovery_unit.py."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.reliability.daemon import Daemon
from tests.reliability.test_daemon_survival import create_and_start, last_tick

pytestmark = [pytest.mark.reliability, pytest.mark.docker]


async def next_console_tick(daemon: Daemon, internal_id: str, token: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{daemon.url}/ws/{internal_id}?token={token}") as ws:
            async def tick() -> str:
                for _ in range(200):  # frames: history, stats, status, then live lines
                    frame = await ws.receive_json(timeout=10)
                    if frame["event"] == "console" and frame["data"].startswith("tick "):
                        return frame["data"]
                raise AssertionError("no console line")
            return await asyncio.wait_for(tick(), 15)


async def test_after_kill9_every_console_is_reattached_in_the_background(tmp_path, node_token, container_prefix):
    ids = [f"rc{i}" for i in range(5)]
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix, "recovery_concurrency": 2})
    try:
        await daemon.start()
        await create_and_start(daemon, ids)
        daemon.kill9()
        subprocess.run(["docker", "kill", f"{container_prefix}rc4"], capture_output=True, check=True)
        began = time.monotonic()
        await daemon.start(timeout=30)
        first_answer = time.monotonic() - began
        _, listing = await daemon.call("GET", "/containers")
        assert listing["count"] == 5  # served from the store: each as last announced, or already compared

        async def recovered() -> dict | None:
            _, system = await daemon.call("GET", "/system")
            servers = system["servers"]
            return servers if servers["recovery"]["pending"] == 0 and servers["recovery"]["rounds"] else None

        servers = await wait_for(recovered, timeout=30, interval=0.05)
        assert servers["attached"] == 4 and servers["state"]["running"] == 4, servers
        assert first_answer < 10, first_answer  # loose: the machine is shared; the bench measures it
        _, body = await daemon.call("GET", f"/containers/{ids[4]}")
        assert (body["state"], body["exit_code"]) == ("offline", 137), body
        for internal_id in ids[:4]:  # each console streams again, and its history was read back
            assert (await next_console_tick(daemon, internal_id, node_token)).startswith("tick ")
            assert await last_tick(daemon, internal_id) > 0
        # Still controllable: a stop right away, and a start of the one that died.
        assert (await daemon.call("POST", f"/containers/{ids[0]}/stop", params={"timeout": "5"}))[0] == 202
        assert (await daemon.call("POST", f"/containers/{ids[4]}/start"))[0] == 202

        async def settled() -> bool:
            _, listing = await daemon.call("GET", "/containers")
            states = {c["internal_id"]: c["state"] for c in listing["containers"]}
            return states == {**dict.fromkeys(ids, "running"), ids[0]: "offline"}

        await wait_for(settled, timeout=30, interval=0.2)
        log = daemon.log_path.read_text()
        assert "compared 5 servers with the engine" in log, log[-3000:]
    finally:
        daemon.stop()
