"""What a panel sees is what it can act on: an action asked for the moment a state shows is not refused
because the action that reached that state still holds the server's lock (its tail: the engine's answer to a
start arriving after the console already said `running`). An action really under way is still refused, after
a bounded wait, with a 409; one the state forbids is refused at once. Against the real engine; the start
call is only delayed, never faked."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from lightd import keys
from lightd.servers.power import LOCK_WAIT_SECONDS
from tests.servers.helpers import EventLog, create_server, wait_state

# `up` is printed at once: the start pattern matches before the engine's answer to the start is read.
READY_AT_ONCE = 'echo up; while read line; do [ "$line" = stop ] && exit 0; done'


def hold_back_start_answers(app: Any, monkeypatch: Any, *, before: float = 0.0, after: float = 0.0) -> None:
    """The start is sent to the engine `before` seconds late and its answer read `after` seconds late; the
    engine starts the container as asked."""
    env = app[keys.SERVERS]._env  # noqa: SLF001 - the test slows the one engine call it is about
    real_start = env.start

    async def slow_start(internal_id: str) -> None:
        await asyncio.sleep(before)
        await real_start(internal_id)
        await asyncio.sleep(after)

    monkeypatch.setattr(env, "start", slow_start)


async def start_held_back(dapi: Any, dclient: Any, monkeypatch: Any, internal_id: str, *, shows: str,
                          before: float = 0.0, after: float = 0.0, **fields: Any) -> Any:
    """Create and start a server whose start answer is held back; return it once its state `shows` (as a
    panel's socket sees it, on the event bus) with the start still holding its lock."""
    await create_server(dapi, internal_id, startup_command=READY_AT_ONCE, start_pattern="up", **fields)
    hold_back_start_answers(dclient.app, monkeypatch, before=before, after=after)
    server = dclient.app[keys.SERVERS].get(internal_id)
    events = EventLog(dclient.app, internal_id)
    assert (await dapi.post(f"/containers/{internal_id}/start"))[0] == 202
    await events.wait_type(shows, timeout=30)
    assert server.lock.action == "start"  # the state shows, the lock is held
    return server


async def test_a_stop_asked_for_as_soon_as_running_shows_is_not_refused(dapi, dclient, monkeypatch):
    # The start's lock outlives `running` by 1.5 s (less than the 2 s wait): the CI race (a stop, a patch or
    # a pause sent right after `running` showed, refused as "another power action (start) is in progress"),
    # made certain.
    await start_held_back(dapi, dclient, monkeypatch, "tail", shows="running", after=1.5,
                          stop={"type": "command", "value": "stop"})
    status, body = await dapi.post("/containers/tail/stop")
    assert status == 202, body
    await wait_state(dapi, "tail", "offline", timeout=30)


async def test_a_pause_and_a_patch_asked_for_in_that_window_go_through(dapi, dclient, monkeypatch):
    await start_held_back(dapi, dclient, monkeypatch, "tailp", shows="running", after=1.5)
    status, body = await dapi.call("PATCH", "/containers/tailp", json={"environment": {"A": "1"}})
    assert status == 200, body
    assert (await dapi.post("/containers/tailp/pause"))[0] == 202
    await wait_state(dapi, "tailp", "paused", timeout=30)
    assert (await dapi.post("/containers/tailp/kill"))[0] == 202
    await wait_state(dapi, "tailp", "offline", timeout=30)


async def test_an_action_really_under_way_is_still_refused_after_the_wait(dapi, dclient, monkeypatch):
    # The engine's answer to the start is held back well past the wait: the start is under way, and every
    # action below is one `starting` allows.
    await start_held_back(dapi, dclient, monkeypatch, "slow", shows="starting", before=LOCK_WAIT_SECONDS * 4)
    for action in ("stop", "restart", "pause"):
        status, body = await dapi.post(f"/containers/slow/{action}")
        assert status == 409 and body["code"] == "power_action_in_progress", (action, body)
        assert "(start)" in body["error"], body
    status, body = await dapi.call("PATCH", "/containers/slow", json={"environment": {"A": "1"}})
    assert status == 409 and body["code"] == "power_action_in_progress", body
    # Refused, not dropped and not queued: the start goes on to run, and nothing else happened.
    await wait_state(dapi, "slow", "running", timeout=60)
    assert (await dapi.post("/containers/slow/kill"))[0] == 202
    await wait_state(dapi, "slow", "offline", timeout=30)


async def test_a_refusal_the_state_makes_comes_at_once_and_a_kill_still_goes_through(dapi, dclient, monkeypatch):
    server = await start_held_back(dapi, dclient, monkeypatch, "early", shows="starting",
                                   before=LOCK_WAIT_SECONDS * 4)
    # A second start is refused for the state it sees (`starting`), not after waiting for the lock.
    status, body = await dapi.post("/containers/early/start")
    assert status == 409 and body["code"] == "conflict" and "already starting" in body["error"], body
    assert (await dapi.post("/containers/early/unpause"))[0] == 409
    assert server.lock.action == "start"  # still under way: neither waited it out
    # A kill always goes through, even before the engine has answered the start (a SIGKILL then would find
    # nothing running): it is carried out as soon as the container runs, and it is no crash.
    events = EventLog(dclient.app, "early")
    assert (await dapi.post("/containers/early/kill"))[0] == 202
    await wait_state(dapi, "early", "offline", timeout=60)
    assert "crashed" not in events.types() and events.types()[-1] == "offline", events.types()
    assert server.lock.action is None


async def test_a_server_deleted_during_the_wait_is_not_started_again(dapi, dclient, container_prefix):
    """The 2 s wait is an await between the checks and the lock: a delete (which takes no lock) can land in
    it. The waiting start must not then create a container for a server that no longer exists."""
    await create_server(dapi, "gone")
    server = dclient.app[keys.SERVERS].get("gone")
    server.lock.try_acquire("test")  # stands for the tail of any action, held across the delete
    start = asyncio.ensure_future(dapi.post("/containers/gone/start"))
    await asyncio.sleep(0.3)  # the start is waiting for the lock
    assert not start.done()
    assert (await dapi.delete("/containers/gone"))[0] == 200
    server.lock.release()
    status, body = await start
    assert status == 404 and body["code"] == "not_found", body
    await asyncio.sleep(1)  # a start spawned anyway would have made its container by now
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
                            f"label=lightd.prefix={container_prefix}"], capture_output=True, text=True).stdout.split()
    assert not [n for n in names if n.startswith(f"{container_prefix}gone")], names
