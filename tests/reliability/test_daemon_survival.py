"""Fault survival against the real engine: kill -9 of the daemon, and the Docker engine going away."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import defaultdict

import aiohttp
import pytest
import socketio

from tests.conftest import TEST_IMAGE, wait_for
from tests.panel import Panel, free_port
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


def live_restore() -> bool:
    result = subprocess.run(["docker", "info", "--format", "{{.LiveRestoreEnabled}}"], capture_output=True, text=True)
    return result.stdout.strip() == "true"


async def last_tick(daemon: Daemon, internal_id: str) -> int:
    status, logs = await daemon.call("GET", f"/containers/{internal_id}/logs", params={"lines": "5"})
    assert status == 200, logs
    ticks = [int(line.split()[1]) for line in logs["lines"] if line.startswith("tick ")]
    return ticks[-1] if ticks else 0


async def test_engine_away_is_503_and_servers_reattach(tmp_path, node_token, container_prefix):
    """With live-restore (as scripts/setup-docker.sh starts the engine, and as a host should run it), a
    server keeps running while dockerd is away; the daemon answers 503 for what needs the engine, keeps
    serving the rest, and re-attaches the console when the engine is back: the server never goes offline."""
    if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
        pytest.fail("this test restarts dockerd and needs it running as a local process")
    if not live_restore():  # an engine started before the setup script asked for live-restore
        dockerd("stop")
        dockerd("start")
        if not live_restore():
            pytest.fail("this test needs an engine with live-restore (scripts/setup-docker.sh starts one)")
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix, "engine_poll_seconds": 0.5})
    try:
        await daemon.start()
        await create_and_start(daemon, ["eng"])
        await wait_for(lambda: last_tick(daemon, "eng"), timeout=10, interval=0.3)
        dockerd("stop")
        status, volume = await daemon.call("POST", "/volumes")
        assert status == 201
        status, body = await daemon.call("POST", "/containers", json={
            "internal_id": "during", "image": TEST_IMAGE, "volume_id": volume["volume_id"], "startup_command": "sleep 1"})
        assert status == 503 and "Docker" in body["error"]
        assert (await daemon.call("POST", "/containers/eng/kill"))[0] == 503
        assert (await daemon.call("GET", "/containers"))[0] == 200
        seen_before_restart = await last_tick(daemon, "eng")
        await asyncio.sleep(1.5)  # the server goes on printing with nobody attached
        dockerd("start")

        async def live_again() -> int | None:
            tick = await last_tick(daemon, "eng")
            return tick if tick > seen_before_restart + 3 else None

        recovered_at = await wait_for(live_again, timeout=30, interval=0.3)
        await asyncio.sleep(1.5)
        assert await last_tick(daemon, "eng") > recovered_at, "the console did not resume after re-attaching"
        status, body = await daemon.call("GET", "/containers/eng")
        assert body["state"] == "running" and body["exit_code"] is None, body
        status, body = await daemon.call("POST", "/containers/eng/kill")
        assert status == 202, body
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


async def test_sigterm_with_every_front_end_unwinds_promptly_and_closes_the_store(tmp_path, node_token, container_prefix):
    """SIGTERM with every front end on its own port and mounted, sockets open on both paths: one ordered
    unwind (own-port listeners, front ends, services, store), a prompt exit 0, and the store closed — SQLite
    removes the write-ahead log only at a clean close (an open store would also keep aiosqlite's thread,
    and so the process, alive)."""
    ports = {name: free_port() for name in ("lxc_tools", "lxd_panel", "proxicloud", "container_codes")}
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix},
                    compat={name: {"enabled": True, "port": port} for name, port in ports.items()})
    await daemon.start()
    wal = tmp_path / "data" / "lightd.db-wal"
    own = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    main_ws = daemon.url.replace("http", "ws")
    sio = socketio.AsyncClient(reconnection=False)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {node_token}"}) as http:
            async with http.get(own["proxicloud"] + "/api/containers") as resp:
                assert resp.status == 200
            async with http.post(own["container_codes"] + "/api/proxy/upstreams",
                                 json={"name": "shared", "servers": [{"address": "127.0.0.1:9"}]}) as resp:
                assert resp.status == 201, await resp.text()
            async with http.get(daemon.url + "/compat/container-codes/api/proxy/upstreams") as resp:
                assert resp.status == 200 and "shared" in await resp.text()  # the same state on both paths
            sockets = [
                await http.ws_connect(own["lxd_panel"].replace("http", "ws") + "/ws/monitor"),
                await http.ws_connect(main_ws + "/compat/lxd-panel/ws/monitor"),
                await http.ws_connect(own["container_codes"].replace("http", "ws") + f"/api/ws/updates?token={node_token}"),
                await http.ws_connect(main_ws + "/compat/container-codes/api/ws/updates"),
            ]
            await sio.connect(own["lxc_tools"], transports=["websocket"], wait_timeout=10)
            assert wal.exists()  # the store is open in WAL mode
            started = time.monotonic()
            code = await asyncio.to_thread(daemon.stop)
            elapsed = time.monotonic() - started
            for ws in sockets:
                await ws.close()
    finally:
        await sio.disconnect()
        daemon.stop()
    log = daemon.log_path.read_text()
    assert code == 0, log[-3000:]
    assert elapsed < 10, (elapsed, log[-3000:])
    assert not wal.exists(), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
