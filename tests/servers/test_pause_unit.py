"""Pause and unpause on a FakeEnvironment: the `paused` state in the transition table, the power actions
allowed from it (a stop thaws first, a kill needs nothing), the console kept attached, recovery of a paused
container, and pauses done outside lightd (engine events). The real-engine test is test_pause.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from lightd.errors import Conflict, EngineError
from lightd.servers.engine_watch import EngineWatch
from lightd.servers.environment import ContainerPaused, ContainerUnpaused, EventStreamUp
from lightd.servers.state import PAUSED, RUNNING, STARTING, STOPPING, ServerStates
from tests.servers.fake_environment import FakeEnvironment
from tests.servers.test_engine_watch_unit import FakeEngineEvents
from tests.servers.unit_rig import Recorder, Rig, make_rig_fixture, rig_fixture, until  # noqa: F401 - fixtures


def test_the_table_pauses_a_running_or_starting_server_and_resumes_what_it_interrupted():
    for before in (RUNNING, STARTING):
        states = ServerStates("s", run=before, install="ready")
        assert states.move(PAUSED) and states.frozen and states.resume_to == before
        assert states.move(STOPPING) and states.frozen  # a stop of a frozen process must thaw it first
        states.thawed()
        assert not states.frozen
    states = ServerStates("s", run=PAUSED, install="ready")  # as stored by a daemon that stopped
    assert states.frozen and states.resume_to == RUNNING


def test_the_checks_of_pause_and_unpause():
    with pytest.raises(Conflict, match="offline"):
        ServerStates("s", run="offline", install="ready").check_power("pause")
    with pytest.raises(Conflict, match="already paused"):
        ServerStates("s", run=PAUSED, install="ready").check_power("pause")
    with pytest.raises(Conflict, match="not paused"):
        ServerStates("s", run=RUNNING, install="ready").check_power("unpause")
    with pytest.raises(Conflict, match="already paused"):
        ServerStates("s", run=PAUSED, install="ready").check_power("start")
    for action in ("stop", "restart", "kill"):
        ServerStates("s", run=PAUSED, install="ready").check_power(action)


async def test_pause_and_unpause_keep_the_console(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "pause")
    assert server.state == "paused" and fake.containers["srv"].paused
    assert (await rig.stored("srv"))["state"] == "paused"
    assert server.attached and not server.lock.locked
    with pytest.raises(Conflict):
        await rig.manager.send_command("srv", "say hi")  # a frozen process reads nothing
    with pytest.raises(Conflict, match="already paused"):
        await rig.manager.power("srv", "start")
    await rig.manager.power_and_wait("srv", "unpause")
    assert server.state == "running" and not fake.containers["srv"].paused
    fake.print("srv", "still here")  # the same console stream, never re-attached
    await until(lambda: "still here" in log.lines())
    assert log.types() == ["paused", "running"]
    assert fake.calls.count("attach") == 1


async def test_a_server_paused_while_starting_goes_back_to_starting(rig: Rig, fake: FakeEnvironment):
    server = await rig.server(start_pattern="Done")
    await rig.manager.power_and_wait("srv", "start")
    await rig.manager.power_and_wait("srv", "pause")
    await rig.manager.power_and_wait("srv", "unpause")
    assert server.state == "starting"
    fake.print("srv", "Done")
    await until(lambda: server.state == "running")


@pytest.mark.parametrize("stop", [None, {"type": "command", "value": "stop"}])
async def test_a_stop_of_a_paused_server_thaws_it_first(rig: Rig, fake: FakeEnvironment, stop: Any):
    server = await rig.running(**({"stop": stop} if stop else {}))
    await rig.manager.power_and_wait("srv", "pause")
    log = Recorder(rig.events, "srv")
    fake.calls.clear()
    if stop:  # the process answers its stop command once it reads it
        task = asyncio.ensure_future(rig.manager.power_and_wait("srv", "stop"))
        await until(lambda: fake.containers["srv"].stdin)
        assert not fake.containers["srv"].paused  # it was thawed before the command was written
        fake.exit("srv", 0)
        await task
    else:
        await rig.manager.power_and_wait("srv", "stop")
        assert fake.calls.index("unpause") < fake.calls.index("signal")
    assert server.state == "offline" and not server.states.frozen
    assert log.types() == ["stopping", "exit", "offline"]  # a requested stop, not a crash


async def test_restart_and_kill_of_a_paused_server(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    await rig.manager.power_and_wait("srv", "pause")
    await rig.manager.power_and_wait("srv", "restart")
    assert server.state == "running" and not fake.containers["srv"].paused
    await rig.manager.power_and_wait("srv", "pause")
    log = Recorder(rig.events, "srv")
    await rig.manager.power_and_wait("srv", "kill")
    assert server.state == "offline"
    assert "unpause" not in fake.calls[-3:]  # the engine thaws a container to deliver a signal
    assert "crashed" not in log.types()


async def test_a_stop_that_cannot_thaw_leaves_it_paused(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    await rig.manager.power_and_wait("srv", "pause")
    fake.fail_next("unpause", EngineError("unpause refused"))
    with pytest.raises(EngineError):
        await rig.manager.power_and_wait("srv", "stop")
    assert server.state == "paused" and fake.containers["srv"].paused
    await rig.manager.power_and_wait("srv", "unpause")
    assert server.state == "running"


async def test_a_paused_server_killed_outside_lightd_crashed(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    await rig.manager.power_and_wait("srv", "pause")
    log = Recorder(rig.events, "srv")
    fake.exit("srv", 137)
    await until(lambda: server.state == "offline")
    assert "crashed" in log.types()


async def test_a_paused_container_is_found_paused_after_a_daemon_restart(
    make_rig: Callable[..., Any], fake: FakeEnvironment,
):
    rig = await make_rig()
    await rig.running()
    await rig.manager.power_and_wait("srv", "pause")
    await rig.close()
    rig = await make_rig()
    server = rig.manager.get("srv")
    assert server.state == "paused" and server.attached
    await rig.manager.power_and_wait("srv", "unpause")
    assert server.state == "running"


@pytest.fixture(name="fake")
def events_fake_fixture() -> FakeEngineEvents:
    return FakeEngineEvents()


async def test_a_pause_outside_lightd_is_followed(rig: Rig, fake: FakeEngineEvents):
    task = rig.tasks.spawn(EngineWatch(rig.manager, fake, 3600).run(), name="engine-monitor")
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.emit(EventStreamUp())
    await fake.pause("srv")  # `docker pause` outside lightd
    fake.emit(ContainerPaused("srv", 0.0))
    await until(lambda: server.state == "paused")
    await fake.unpause("srv")
    fake.emit(ContainerUnpaused("srv", 0.0))
    await until(lambda: server.state == "running")
    # lightd's own pause and unpause, their events seen late: the state follows the engine, not the events.
    await rig.manager.power_and_wait("srv", "pause")
    await rig.manager.power_and_wait("srv", "unpause")
    fake.emit(ContainerPaused("srv", 0.0), ContainerUnpaused("srv", 0.0))
    await asyncio.sleep(0.1)
    assert server.state == "running"
    assert log.types() == ["paused", "running", "paused", "running"]
    task.cancel()
