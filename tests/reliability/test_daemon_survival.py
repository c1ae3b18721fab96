"""Fault survival against the real engine: kill -9 of the daemon, and the Docker engine going away."""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict

import aiohttp
import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.panel import Panel
from tests.reliability.daemon import Daemon

pytestmark = [pytest.mark.reliability]

TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"


async def create_and_start(daemon: Daemon, ids: list[str]) -> None:
    for internal_id in ids:
        status, volume = await daemon.call("POST", "/volumes")
        assert status == 201, volume
        status, body = await daemon.call("POST", "/containers", json={
            "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
            "startup_command": TICKER, "start_pattern": "^tick 1$"})
        assert status == 202, body

    async def all_ready() -> bool:
        _, listing = await daemon.call("GET", "/containers")
        return all(c["install_state"] == "ready" for c in listing["containers"]) and listing["count"] == len(ids)

    await wait_for(all_ready, timeout=120, interval=0.5)
    for internal_id in ids:
        status, body = await daemon.call("POST", f"/containers/{internal_id}/start")
        assert status == 202, body

    async def all_running() -> bool:
        _, listing = await daemon.call("GET", "/containers")
        return all(c["state"] == "running" for c in listing["containers"])

    await wait_for(all_running, timeout=120, interval=0.5)


async def test_kill9_with_panel_down_loses_nothing(tmp_path, node_token, container_prefix):
    panel = Panel()  # not listening yet: the panel is down
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix},
                    remote=panel.remote(retry_max_seconds=0.5))
    ids = [f"r{i:02d}" for i in range(20)]
    try:
        await daemon.start()
        await create_and_start(daemon, ids)
        _, before = await daemon.call("GET", "/remote/status")
        assert before["queue_depth"] >= 4 * len(ids)  # installing, ready, starting, running each
        daemon.kill9()

        for internal_id in ids:  # the containers did not notice
            running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container_prefix + internal_id],
                                     capture_output=True, text=True).stdout.strip()
            assert running == "true", internal_id

        await panel.start()
        await daemon.start()
        _, listing = await daemon.call("GET", "/containers")
        assert {c["internal_id"]: c["state"] for c in listing["containers"]} == {i: "running" for i in ids}

        # the console resumes: new lines arrive over the WebSocket after the restart
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{daemon.url}/ws/r07?token={node_token}") as ws:
                async def next_tick() -> str:
                    while True:
                        frame = await ws.receive_json(timeout=10)
                        if frame["event"] == "console" and frame["data"].startswith("tick "):
                            return frame["data"]
                assert (await asyncio.wait_for(next_tick(), 15)).startswith("tick ")

        async def drained() -> bool:
            _, status = await daemon.call("GET", "/remote/status")
            return status["queue_depth"] == 0

        await wait_for(drained, timeout=60, interval=0.2)
        per_server: dict[str, list[dict]] = defaultdict(list)
        for update in panel.updates:
            per_server[update["server"]].append(update)
        for internal_id in ids:
            updates = per_server[internal_id]
            seqs = [u["seq"] for u in updates]
            assert seqs == list(range(1, len(seqs) + 1)), (internal_id, seqs)  # once each, in order, no gap
            statuses = [u.get("status") for u in updates]
            assert statuses[:4] == ["installing", "ready", "starting", "running"], (internal_id, statuses)
    finally:
        daemon.stop()
        await panel.stop()


def dockerd(action: str) -> None:
    if action == "stop":
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
        for _ in range(300):  # until the process is gone, not just its socket (its pid file blocks a restart)
            if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
                return
            subprocess.run(["sleep", "0.1"])
        raise AssertionError("dockerd did not stop")
    subprocess.run(["bash", "scripts/setup-docker.sh"], check=True, capture_output=True)


async def test_engine_away_is_503_and_servers_reattach(tmp_path, node_token, container_prefix):
    if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
        pytest.fail("this test restarts dockerd and needs it running as a local process")
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix, "engine_poll_seconds": 0.5})
    try:
        await daemon.start()
        # live-restore is off on a default engine, so a server would die with dockerd: restart-safe
        # servers are what a host runs with live-restore; here we check the daemon's own survival.
        await create_and_start(daemon, ["eng"])
        dockerd("stop")
        status, volume = await daemon.call("POST", "/volumes")
        assert status == 201
        status, body = await daemon.call("POST", "/containers", json={
            "internal_id": "during", "image": TEST_IMAGE, "volume_id": volume["volume_id"], "startup_command": "sleep 1"})
        assert status == 503 and "Docker" in body["error"]
        assert (await daemon.call("POST", "/containers/eng/kill"))[0] == 503
        assert (await daemon.call("GET", "/containers"))[0] == 200
        dockerd("start")

        async def recovered() -> bool:
            _, body = await daemon.call("GET", "/containers/eng")
            return body["state"] == "offline"  # the engine stopped it; the daemon saw that

        await wait_for(recovered, timeout=30, interval=0.3)
        status, body = await daemon.call("POST", "/containers/eng/start")
        assert status == 202, body

        async def running_again() -> bool:
            _, body = await daemon.call("GET", "/containers/eng")
            return body["state"] == "running"

        await wait_for(running_again, timeout=30, interval=0.3)
        _, logs = await daemon.call("GET", "/containers/eng/logs", params={"lines": "3"})
        assert logs["lines"]
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.stop()
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            dockerd("start")


async def test_sigterm_is_a_clean_exit(tmp_path, node_token, container_prefix):
    """systemd must not record a requested stop as a failure."""
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    await daemon.start()
    assert daemon.stop() == 0, daemon.log_path.read_text()[-2000:]
