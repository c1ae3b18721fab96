"""Fast unit tests of one server's state machine, power lock and crash policy: a real ServerManager on a
FakeEnvironment (no Docker). The real-engine tests (test_lifecycle, test_start_pattern...) stay; these add
cases that are slow or hard to cause for real. Engine errors at each step: test_server_unit_failures and _changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from lightd.errors import Conflict, DockerUnavailable, EngineError, PowerActionInProgress, ServerInstalling
from tests.servers.fake_environment import FakeEnvironment
from tests.servers.unit_rig import (  # noqa: F401 - fixtures
    Recorder,
    Rig,
    fake_fixture,
    make_rig_fixture,
    rig_fixture,
    until,
)

# -- the state machine ------------------------------------------------------------------------------


async def test_start_pattern_moves_starting_to_running(rig: Rig, fake: FakeEnvironment):
    server = await rig.server(start_pattern="Done")
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "starting"
    assert fake.containers["srv"].running
    fake.print("srv", "loading world")
    await until(lambda: "loading world" in log.lines())
    assert server.state == "starting"  # a line that does not match changes nothing
    fake.print("srv", "Done (1.2s)! For help, type help")
    await until(lambda: "running" in log.types())
    assert log.types() == ["starting", "running"]
    assert log.lines() == ["loading world", "Done (1.2s)! For help, type help"]
    assert (await rig.stored("srv"))["state"] == "running"
    assert not server.lock.locked


async def test_start_without_pattern_is_running_when_started(rig: Rig, fake: FakeEnvironment):
    server = await rig.server()
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "running"
    assert log.types() == ["starting", "running"]
    assert fake.calls[-1] == "start"
    with pytest.raises(Conflict):
        await rig.manager.power("srv", "start")  # already running


async def test_start_of_a_running_container_reattaches(rig: Rig, fake: FakeEnvironment):
    """The engine says it runs while lightd thinks it is offline: attach to it, never start it twice."""
    server = await rig.server(start_pattern="Done")
    fake.containers["srv"].running = True
    fake.containers["srv"].logs.append("Done earlier")
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "running"  # the pattern is in the log read back
    assert "start" not in fake.calls
    assert server.history.tail(5) == ["Done earlier"]


async def test_stop_by_signal(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    await rig.manager.power("srv", "stop")
    assert server.state == "stopping"  # shown as soon as the stop is accepted
    await until(lambda: "offline" in log.types())
    assert fake.signals == [("srv", "SIGTERM")]
    assert log.types() == ["stopping", "exit", "offline"]
    assert log.typed("exit")[0]["exit_code"] == 143
    assert (await rig.stored("srv"))["exit_code"] == 143
    assert not server.lock.locked


async def test_stop_by_command(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(stop={"type": "command", "value": "stop"})
    log = Recorder(rig.events, "srv")
    await rig.manager.power("srv", "stop")
    await until(lambda: fake.containers["srv"].stdin)
    assert fake.containers["srv"].stdin == [b"stop\n"]
    assert fake.signals == []
    assert server.state == "stopping" and server.lock.locked  # waiting for the process to end
    fake.exit("srv", 0)
    await until(lambda: server.state == "offline" and not server.lock.locked)
    assert "crashed" not in log.types()


async def test_stop_that_times_out_kills(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    fake.ignore("srv", "SIGTERM")
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "stop", timeout=0.05)
    assert server.state == "offline"
    assert fake.signals == [("srv", "SIGTERM"), ("srv", "SIGKILL")]
    assert any("did not stop within" in m for m in log.messages())
    assert "crashed" not in log.types()


async def test_stop_command_typed_in_the_console_is_not_a_crash(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(stop={"type": "command", "value": "stop"}, restart_on_crash=True)
    log = Recorder(rig.events, "srv")
    await rig.manager.send_command("srv", "stop")
    assert server.state == "stopping"
    fake.exit("srv", 0)
    await until(lambda: "offline" in log.types())
    await asyncio.sleep(0.05)
    assert "crashed" not in log.types()
    assert fake.calls.count("start") == 1  # not restarted


async def test_kill(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "kill")
    assert server.state == "offline"
    assert fake.signals == [("srv", "SIGKILL")]
    assert log.typed("exit")[0]["exit_code"] == 137
    assert "crashed" not in log.types()
    with pytest.raises(Conflict):
        await rig.manager.power("srv", "kill")  # nothing left to kill


async def test_restart(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(start_pattern="Ready")
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "restart")
    assert server.state == "starting"
    fake.print("srv", "Ready")
    await until(lambda: "running" in log.types())
    assert log.types() == ["stopping", "exit", "offline", "starting", "running"]
    assert fake.calls.count("start") == 2


async def test_start_recreates_a_container_its_spec_no_longer_describes(rig: Rig, fake: FakeEnvironment):
    server = await rig.server()
    old = fake.containers["srv"]
    server.use_spec(server.spec.model_copy(update={"startup_command": "run --new"}))
    await rig.manager.power_and_wait("srv", "start")
    assert fake.containers["srv"] is not old
    assert fake.containers["srv"].spec.startup_command == "run --new"
    assert server.state == "running"


async def test_restarts_leave_no_start_timeout_timers(rig: Rig, fake: FakeEnvironment):
    """A start's timeout timer goes when the start is over: restarts of a server with a long start timeout
    do not pile timers up on the wheel (bench/soak.py restarts every server every minute)."""
    server = await rig.server(start_pattern="Ready", start_timeout_seconds=3600)
    pending = len(rig.manager.timers)
    for _ in range(5):
        await rig.manager.power_and_wait("srv", "restart" if server.state == "running" else "start")
        assert server.state == "starting" and len(rig.manager.timers) == pending + 1
        fake.print("srv", "Ready")
        await until(lambda: server.state == "running")
        assert len(rig.manager.timers) == pending
    await rig.manager.power_and_wait("srv", "restart")
    await rig.manager.power_and_wait("srv", "stop")  # stopped while starting: its timer goes too
    assert server.state == "offline" and len(rig.manager.timers) == pending


async def test_start_recreates_a_missing_container(rig: Rig, fake: FakeEnvironment):
    server = await rig.server()
    del fake.containers["srv"]
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "running" and fake.containers["srv"].running
    assert (server.data_path / "entrypoint.sh").is_file()


# -- the power lock ---------------------------------------------------------------------------------


async def test_second_power_action_while_one_runs_is_refused(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    gate = fake.hold("signal")
    await rig.manager.power("srv", "stop")
    await until(lambda: "signal" in fake.calls)  # the stop is under way and holds the lock
    assert server.lock.action == "stop"
    for action in ("stop", "restart"):
        with pytest.raises(PowerActionInProgress, match=r"\(stop\) is in progress"):
            await rig.manager.power("srv", action)
    with pytest.raises(Conflict):
        await rig.manager.power("srv", "start")
    assert server.lock.action == "stop"  # the refusals took nothing from it
    gate.set()
    await until(lambda: server.state == "offline" and not server.lock.locked)
    await rig.manager.power_and_wait("srv", "start")  # the lock was released
    assert server.state == "running"


async def test_kill_is_allowed_while_the_lock_is_held(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    gate = fake.hold("signal")
    stop = asyncio.ensure_future(rig.manager.power_and_wait("srv", "stop"))
    await until(lambda: "signal" in fake.calls)
    await rig.manager.power_and_wait("srv", "kill")
    assert server.state == "offline"
    assert fake.signals == [("srv", "SIGKILL")]
    gate.set()  # the stop's SIGTERM now reaches a stopped container: not an error
    await stop
    assert not server.lock.locked and server.state == "offline"


async def test_power_refused_while_installing(rig: Rig, fake: FakeEnvironment):
    gate = fake.hold("run_install")
    server = await rig.server(install=False, install_script="echo hi")
    await until(lambda: "run_install" in fake.calls)
    assert server.lock.action == "install"
    for action in ("start", "restart"):
        with pytest.raises(ServerInstalling):
            await rig.manager.power("srv", action)
    gate.set()
    await server.install_task
    assert server.install_state == "ready" and not server.lock.locked


async def test_engine_down_refuses_power_without_taking_the_lock(rig: Rig, fake: FakeEnvironment):
    server = await rig.server()
    fake.up = False
    with pytest.raises(DockerUnavailable):
        await rig.manager.power("srv", "start")
    assert not server.lock.locked and server.state == "offline"
    assert "start" not in fake.calls
    fake.up = True
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "running"


# -- crash policy -----------------------------------------------------------------------------------


async def test_crash_without_restart_policy(rig: Rig, fake: FakeEnvironment):
    await rig.running()
    log = Recorder(rig.events, "srv")
    fake.exit("srv", 3)
    await until(lambda: "offline" in log.types())
    assert log.types() == ["exit", "crashed", "offline"]
    assert log.typed("crashed")[0] == {"type": "crashed", "exit_code": 3, "oom_killed": False}
    assert "Server crashed: exit code 3" in log.messages()
    stored = await rig.stored("srv")
    assert stored["exit_code"] == 3 and stored["last_crash_at"] is not None
    await asyncio.sleep(0.05)
    assert fake.calls.count("start") == 1


async def test_exit_while_starting_is_a_crash(rig: Rig, fake: FakeEnvironment):
    await rig.server(start_pattern="Done")
    await rig.manager.power_and_wait("srv", "start")
    log = Recorder(rig.events, "srv")
    fake.exit("srv", 1)
    await until(lambda: "offline" in log.types())
    assert "crashed" in log.types()


async def test_out_of_memory_crash_is_said(rig: Rig, fake: FakeEnvironment):
    await rig.running()
    log = Recorder(rig.events, "srv")
    fake.exit("srv", 137, oom=True)
    await until(lambda: "offline" in log.types())
    assert log.typed("crashed")[0]["oom_killed"] is True
    assert "Server crashed: exit code 137 (out of memory)" in log.messages()
    assert (await rig.stored("srv"))["oom_killed"]


async def test_crash_restart_then_a_second_crash_within_the_guard_stays_down(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(restart_on_crash=True)
    log = Recorder(rig.events, "srv")
    fake.exit("srv", 1)
    await until(lambda: "running" in log.types())
    assert log.types() == ["exit", "crashed", "offline", "starting", "running"]
    assert "Restarting the server after a crash" in log.messages()
    assert not server.lock.locked
    log.clear()
    fake.exit("srv", 1)
    await until(lambda: "offline" in log.types())
    await asyncio.sleep(0.05)
    assert fake.calls.count("start") == 2
    assert any(m.startswith("Not restarting: the previous crash was less than 60s ago") for m in log.messages())


async def test_crash_guard_of_zero_restarts_every_time(make_rig: Callable[..., Any], fake: FakeEnvironment):
    rig = await make_rig(servers={"crash_restart_guard_seconds": 0})
    server = await rig.running(restart_on_crash=True)
    for n in (2, 3, 4):
        fake.exit("srv", 1)
        await until(lambda n=n: fake.calls.count("start") == n and server.state == "running")


async def test_crash_restart_that_fails_is_reported(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(restart_on_crash=True)
    log = Recorder(rig.events, "srv")
    fake.fail_next("attach", EngineError("attach refused"))
    fake.exit("srv", 1)
    await until(lambda: log.typed("error"))
    assert log.typed("error") == [{"type": "error", "action": "start", "message": "attach refused"}]
    assert "start failed: attach refused" in log.messages()
    assert server.state == "offline" and not server.lock.locked
    assert not fake.containers["srv"].running


async def test_crash_of_a_stopping_server_is_not_a_crash(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(restart_on_crash=True)
    fake.ignore("srv", "SIGTERM")
    log = Recorder(rig.events, "srv")
    await rig.manager.power("srv", "stop")
    await until(lambda: fake.signals)
    fake.exit("srv", 1)  # dies on its own while stopping
    await until(lambda: server.state == "offline" and not server.lock.locked)
    await asyncio.sleep(0.05)
    assert "crashed" not in log.types()
    assert fake.calls.count("start") == 1
