"""Remote sync against a real HTTP panel (tests/panel.py): order, seq, retries, drops, restarts, and a
real Docker lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from lightd import keys
from lightd.app import create_app
from lightd.events import Event
from lightd.servers.events import (
    ActionFailed, InstallFailed, InstallStateChanged, InstallStep, ServerCrashed, ServerDeleted, ServerExited,
    StateChanged,
)
from lightd.sync import Backoff, update_for
from tests.conftest import Api, wait_for
from tests.panel import REMOTE_TOKEN
from tests.servers.helpers import create_server, wait_install, wait_state

TEN = ["starting", "running", "stopping", "offline", "starting", "running", "crashed", "offline", "starting", "running"]


def publish(app, server: str, *types: str) -> None:
    for event_type in types:
        if event_type == "crashed":
            event = ServerCrashed(1, False)
        elif event_type == "installing":
            event = InstallStateChanged(event_type)
        else:
            event = StateChanged(event_type)
        app[keys.EVENTS].publish("event", server, event)


async def depth(app) -> int:
    return (await app[keys.SYNC].status())["queue_depth"]


async def has_depth(app, rows: int) -> bool:
    return await depth(app) == rows


# -- mapping and backoff ---------------------------------------------------------------------------------
def test_update_for_maps_states_and_failures():
    assert update_for(Event("event", "s", StateChanged("running"), ts=1.5)) == {
        "event": "update", "server": "s", "status": "running", "ts": "1970-01-01T00:00:01.500Z"}
    assert update_for(Event("event", "s", InstallStateChanged("ready"), ts=1.5))["status"] == "ready"
    assert update_for(Event("event", "s", InstallFailed("exit 7"), ts=2)) == {
        "event": "update", "server": "s", "error": "failed", "data": "exit 7", "ts": "1970-01-01T00:00:02.000Z"}
    refused = ActionFailed("mount: /srv/x: is a symbolic link", "start")
    assert update_for(Event("event", "s", refused, ts=3)) == {
        "event": "update", "server": "s", "error": "start_failed", "data": "mount: /srv/x: is a symbolic link", "ts": "1970-01-01T00:00:03.000Z"}
    assert update_for(Event("event", "s", ServerCrashed(137, False), ts=4)) == {
        "event": "update", "server": "s", "status": "crashed", "exit_code": 137, "oom_killed": False, "ts": "1970-01-01T00:00:04.000Z"}
    assert update_for(Event("event", "s", ServerDeleted(), ts=5)) == {
        "event": "update", "server": "s", "status": "deleted", "ts": "1970-01-01T00:00:05.000Z"}
    for ignored in (ServerExited(0, False), InstallStep("Started")):
        assert update_for(Event("event", "s", ignored)) is None
    assert update_for(Event("console", "s", "running")) is None
    assert update_for(Event("event", None, StateChanged("running"))) is None


def test_backoff_doubles_to_the_cap_with_small_jitter():
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for got, want in zip(delays, [1, 2, 4, 8, 8, 8]):
        assert want * 0.9 <= got <= want * 1.1
    backoff.reset()
    assert backoff.next_delay() <= 1.1


# -- delivery --------------------------------------------------------------------------------------------
async def test_health_checked_at_start_and_status(aiohttp_client, make_config, panel):
    client = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    sync = client.app[keys.SYNC]
    await wait_for(lambda: sync.panel_healthy is True, timeout=5)
    status = await sync.status()
    assert status["enabled"] is True and status["url"] == panel.url
    assert status["queue_depth"] == 0 and status["dropped"] == 0 and status["last_delivered_at"] is None


async def test_disabled_queues_nothing(aiohttp_client, make_config, panel):
    client = await aiohttp_client(create_app(make_config(remote=panel.remote(enabled=False))))
    publish(client.app, "srv", "starting", "running")
    await asyncio.sleep(0.3)
    assert await depth(client.app) == 0 and panel.attempts == [] and panel.health_calls == 0


async def test_panel_down_then_up_gets_ten_updates_once_in_order(aiohttp_client, make_config, panel):
    panel.mode = "down"
    client = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    publish(client.app, "srv", *TEN)
    await wait_for(lambda: len(panel.attempts) >= 3, timeout=5)
    assert await depth(client.app) == 10
    # head-of-line: only the first update is tried while the panel is down
    assert {p["seq"] for _, p in panel.attempts} == {1}
    panel.mode = "up"
    await wait_for(lambda: len(panel.updates) == 10, timeout=10)
    await asyncio.sleep(0.3)
    assert panel.statuses() == TEN
    assert [u["seq"] for u in panel.updates] == list(range(1, 11))
    assert all(u["server"] == "srv" and u["event"] == "update" and u["ts"].endswith("Z") for u in panel.updates)
    status = await client.app[keys.SYNC].status()
    assert status["queue_depth"] == 0 and status["dropped"] == 0 and status["last_delivered_at"]


async def test_delivery_resumes_after_restart_without_loss_or_duplicates(aiohttp_client, make_config, panel):
    await panel.stop()  # not listening: connection refused
    config = make_config(remote=panel.remote())
    first = await aiohttp_client(create_app(config))
    publish(first.app, "srv", *TEN[:5])
    publish(first.app, "other", "installing")
    await wait_for(lambda: has_depth(first.app, 6), timeout=5)
    await wait_for(lambda: first.app[keys.SYNC].last_error is not None, timeout=5)
    assert "Connect" in first.app[keys.SYNC].last_error
    await first.close()

    second = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    assert await depth(second.app) == 6
    publish(second.app, "srv", *TEN[5:])
    await panel.start()
    await wait_for(lambda: len(panel.updates) == 11, timeout=10)
    await asyncio.sleep(0.3)
    srv = [u for u in panel.updates if u["server"] == "srv"]
    assert [u["status"] for u in srv] == TEN and [u["seq"] for u in srv] == list(range(1, 11))
    assert [(u["server"], u["seq"], u["status"]) for u in panel.updates if u["server"] == "other"] == [
        ("other", 1, "installing")]
    assert len(panel.attempts) == 11  # nothing was sent twice
    assert await depth(second.app) == 0


async def test_refused_update_is_dropped_with_a_record_and_the_next_is_delivered(aiohttp_client, make_config, panel):
    panel.refuse = lambda payload: 400 if payload.get("status") == "stopping" else None
    client = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    publish(client.app, "srv", "starting", "stopping", "offline")
    await wait_for(lambda: len(panel.updates) == 2, timeout=5)
    await asyncio.sleep(0.3)
    assert panel.statuses() == ["starting", "offline"]
    assert [p["status"] for _, p in panel.attempts].count("stopping") == 1  # not retried
    status = await client.app[keys.SYNC].status()
    assert status["dropped"] == 1 and status["queue_depth"] == 0
    assert "http 400" in status["last_error"] and status["last_error_at"]
    [dropped] = await client.app[keys.STORE].list_dropped()
    assert dropped["reason"] == "http 400" and dropped["payload"]["status"] == "stopping"
    assert dropped["payload"]["seq"] == 2
    # seq keeps counting past a drop
    publish(client.app, "srv", "starting")
    await wait_for(lambda: len(panel.updates) == 3, timeout=5)
    assert [u["seq"] for u in panel.updates] == [1, 3, 4]


@pytest.mark.parametrize("code", [503, 429, 408])
async def test_retryable_answers_are_retried_with_backoff(aiohttp_client, make_config, panel, code):
    panel.refuse = lambda payload: code
    client = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    publish(client.app, "srv", "running")
    await wait_for(lambda: len(panel.attempts) >= 2, timeout=5)
    await asyncio.sleep(1.0)
    # 0.05, 0.1, 0.2, 0.2, ... seconds apart: a handful of tries a second, not a tight loop
    times = [t for t, _ in panel.attempts]
    assert 4 <= len(times) <= 15, len(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] < gaps[2] and all(g >= 0.04 for g in gaps)
    status = await client.app[keys.SYNC].status()
    assert status["last_error"] == f"POST /update: http {code}" and status["queue_depth"] == 1
    panel.refuse = lambda payload: None
    await wait_for(lambda: len(panel.updates) == 1, timeout=5)
    assert panel.updates[0]["seq"] == 1 and await depth(client.app) == 0


async def test_connection_refused_is_retried_until_the_panel_listens(aiohttp_client, make_config, panel):
    await panel.stop()
    client = await aiohttp_client(create_app(make_config(remote=panel.remote())))
    sync = client.app[keys.SYNC]
    publish(client.app, "srv", "starting", "running")
    await wait_for(lambda: sync.panel_healthy is False and sync.last_error, timeout=5)
    await asyncio.sleep(0.5)
    assert await depth(client.app) == 2
    await panel.start()
    await wait_for(lambda: len(panel.updates) == 2, timeout=5)
    assert panel.statuses() == ["starting", "running"]
    await wait_for(lambda: sync.panel_healthy is True, timeout=5)


# -- real Docker -----------------------------------------------------------------------------------------
@pytest.fixture
def docker_remote_config(make_config, container_prefix, panel):
    return make_config(docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0}, remote=panel.remote())


async def test_lifecycle_on_docker_reaches_the_panel_in_order(aiohttp_client, docker_remote_config, auth_headers, panel):
    api = Api(await aiohttp_client(create_app(docker_remote_config)), auth_headers)
    await create_server(api, "synced")
    status, body = await api.post("/containers/synced/start")
    assert status == 202, body
    await wait_state(api, "synced", "running")
    status, body = await api.post("/containers/synced/stop", params={"timeout": "5"})
    assert status == 202, body
    await wait_state(api, "synced", "offline")
    await wait_for(lambda: len(panel.updates) >= 6, timeout=10)
    await asyncio.sleep(0.3)
    assert panel.statuses() == ["installing", "ready", "starting", "running", "stopping", "offline"]
    assert [u["seq"] for u in panel.updates] == list(range(1, 7))
    assert {u["server"] for u in panel.updates} == {"synced"}
    assert set(panel.auth) == {f"Bearer {REMOTE_TOKEN}"}
    ts = [u["ts"] for u in panel.updates]
    assert ts == sorted(ts)


async def test_failed_install_on_docker_sends_error_with_details(aiohttp_client, docker_remote_config, auth_headers, panel):
    api = Api(await aiohttp_client(create_app(docker_remote_config)), auth_headers)
    await create_server(api, "broken", ready=False, install_script="echo about to fail\nexit 7\n")
    await wait_install(api, "broken", "failed")
    await wait_for(lambda: len(panel.updates) >= 2, timeout=10)
    installing, failed = panel.updates
    assert installing["status"] == "installing"
    assert failed["error"] == "failed" and "status" not in failed
    assert "exited with code 7" in failed["data"] and "about to fail" in failed["data"]
    assert (failed["server"], failed["seq"]) == ("broken", 2)


async def test_dropped_updates_keep_the_newest_rows_and_count_them_all(tmp_path, monkeypatch):
    """outbox_dropped is capped (it grew without bound while a panel refused every update); the count
    reported as `dropped` stays all-time."""
    from lightd import outbox_store as store_module
    from lightd.store import Store

    monkeypatch.setattr(store_module, "OUTBOX_DROPPED_KEEP", 5)
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    try:
        for n in range(12):
            seq, _ = await store.enqueue_update("srv", {"event": "update", "server": "srv", "n": n}, 1000)
            await store.drop_update(seq, "http 401")
        assert await store.dropped_count() == 12
        kept = await store.list_dropped()
        assert [row["payload"]["n"] for row in kept] == [11, 10, 9, 8, 7]
        # the per-server seq goes on from the dropped ones
        _, server_seq = await store.enqueue_update("srv", {"event": "update", "server": "srv"}, 1000)
        assert server_seq == 13
    finally:
        await store.close()


async def test_dropped_count_carries_over_from_a_schema_without_counters(tmp_path):
    """An existing database (schema 4) with dropped rows: the migration starts the counter at their number."""
    import aiosqlite

    from lightd.store import MIGRATIONS, Store

    path = tmp_path / "db.sqlite"
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute("INSERT INTO schema_version (version) VALUES (0)")
        for step in range(4):
            await db.executescript("BEGIN;" + MIGRATIONS[step] + f"UPDATE schema_version SET version = {step + 1};COMMIT;")
        for seq in (1, 2, 3):
            await db.execute("INSERT INTO outbox_dropped (seq, server, payload, reason, dropped_at) VALUES (?, 's', '{}', 'x', 0)",
                             (seq,))
        await db.commit()
    store = Store(path)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert await store.dropped_count() == 3
    finally:
        await store.close()
