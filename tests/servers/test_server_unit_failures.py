"""An engine error at each step of start, stop, restart, kill, install, reinstall and rebind (a real
ServerManager on a FakeEnvironment): the server ends in a truthful state, the power lock is released and
the failure is published, once."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext

import pytest

from lightd.errors import DockerUnavailable, EngineError, LightdError
from lightd.servers.server import Server
from tests.servers.fake_environment import FakeEnvironment
from tests.servers.unit_rig import (  # noqa: F401 - fixtures
    Recorder,
    Rig,
    fake_fixture,
    make_rig_fixture,
    rig_fixture,
    until,
)

ERRORS = [pytest.param(EngineError, id="engine-error"), pytest.param(DockerUnavailable, id="engine-away")]


async def assert_healthy_again(rig: Rig, server: Server) -> None:
    """The failure left nothing behind: with the engine well again, the server starts (and runs)."""
    if server.state != "offline":
        await rig.manager.power_and_wait(server.id, "kill")
    await rig.manager.power_and_wait(server.id, "start")
    if server.spec.start_pattern:
        rig.env.print(server.id, server.spec.start_pattern)
        await until(lambda: server.state == "running")
    assert server.state == "running" and rig.env.containers[server.id].running
    assert not server.lock.locked


def assert_offline(server: Server, fake: FakeEnvironment) -> None:
    assert server.state == "offline"
    assert server.record["state"] == "offline"
    assert not (server.id in fake.containers and fake.containers[server.id].running)
    assert not server.lock.locked


# -- start --------------------------------------------------------------------------------------------
START_STEPS = [
    # (failing method, calls of it to let pass, what the container looks like before the start)
    ("status", 0, "installed"),
    ("is_current", 0, "installed"),  # preflight: is the container what the spec describes
    ("create", 0, "outdated"),  # preflight: recreate a container made from an older spec
    ("create", 0, "missing"),  # the container was removed behind lightd's back
    ("attach", 0, "installed"),
    ("start", 0, "installed"),
]


@pytest.mark.parametrize("error_type", ERRORS)
@pytest.mark.parametrize(("method", "after", "before"), START_STEPS)
async def test_start_fails_at_each_step(rig: Rig, fake: FakeEnvironment, method: str, after: int, before: str,
                                        error_type: type[LightdError]):
    server = await rig.server(start_pattern="Done")
    if before == "outdated":
        server.use_spec(server.spec.model_copy(update={"startup_command": "run --changed"}))
    elif before == "missing":
        del fake.containers["srv"]
    log = Recorder(rig.events, "srv")
    error = error_type(f"{method} broke")
    fake.fail_next(method, error, after=after)
    with pytest.raises(error_type) as raised:
        await rig.manager.power_and_wait("srv", "start")
    assert raised.value is error
    assert_offline(server, fake)
    await until(lambda: not server.attached)  # a console attached for the start is closed again
    assert {"type": "error", "action": "start", "message": f"{method} broke"} in log.typed("error")
    assert f"start failed: {method} broke" in log.messages()
    assert "crashed" not in log.types()
    assert log.types()[-1] in ("error", "offline") and "running" not in log.types()
    await assert_healthy_again(rig, server)


async def test_start_failure_while_the_engine_goes_away_releases_the_lock(rig: Rig, fake: FakeEnvironment):
    server = await rig.server()
    fake.fail_next("start", DockerUnavailable("engine gone"))
    fake.fail_next("status", DockerUnavailable("engine gone"), after=1)  # the status read at the stream's end
    with pytest.raises(DockerUnavailable):
        await asyncio.wait_for(rig.manager.power_and_wait("srv", "start"), 0.5)
    assert not server.lock.locked
    assert_offline(server, fake)


async def test_a_start_whose_answer_is_lost_but_that_happened_is_a_start(rig: Rig, fake: FakeEnvironment):
    """The engine started the container, then its answer was lost: the server is shown as it is, running."""
    server = await rig.server()
    log = Recorder(rig.events, "srv")
    gate = fake.hold("start")
    fake.fail_next("start", DockerUnavailable("answer lost"))
    task = asyncio.ensure_future(rig.manager.power_and_wait("srv", "start"))
    await until(lambda: "start" in fake.calls)
    fake.containers["srv"].running = True  # started by the engine before the connection broke
    gate.set()
    await task
    assert server.state == "running" and server.attached and not server.lock.locked
    assert log.types() == ["starting", "running"]
    fake.print("srv", "hello")
    await until(lambda: "hello" in log.lines())


@pytest.mark.parametrize("action", ["start", "restart"])
async def test_a_refused_engine_start_is_reported_once_and_exits_nothing(rig: Rig, fake: FakeEnvironment,
                                                                         action: str):
    """One `error` event, naming the action; no `exit` (the process never ran) and no `crashed`."""
    server = await rig.running() if action == "restart" else await rig.server()
    log = Recorder(rig.events, "srv")
    fake.fail_next("start", EngineError("start refused"))
    with pytest.raises(EngineError):
        await rig.manager.power_and_wait("srv", action, timeout=0.05)
    await until(lambda: not server.attached)
    await asyncio.sleep(0.05)  # the closed console's reader has ended: it must not report an exit
    assert log.typed("error") == [{"type": "error", "action": action, "message": "start refused"}]
    assert log.messages().count(f"{action} failed: start refused") == 1
    exits = log.typed("exit")
    assert exits == ([{"type": "exit", "exit_code": 143, "oom_killed": False}] if action == "restart" else [])
    assert "crashed" not in log.types()
    assert log.types()[-2:] == ["offline", "error"]
    assert server.record["exit_code"] == (143 if action == "restart" else None)
    await assert_healthy_again(rig, server)


# -- stop ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stop", "method"), [("signal", "signal"), ("command", "write")])
async def test_stop_whose_graceful_step_fails_kills(rig: Rig, fake: FakeEnvironment, stop: str, method: str):
    """An engine error sending the stop signal or command: the stop waits out its timeout, then kills."""
    value = "SIGTERM" if stop == "signal" else "stop"
    server = await rig.running(stop={"type": stop, "value": value})
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, EngineError(f"{method} refused"))
    await rig.manager.power_and_wait("srv", "stop", timeout=0.05)
    assert_offline(server, fake)
    assert fake.signals == [("srv", "SIGKILL")]
    assert "error" not in log.types() and "crashed" not in log.types()
    assert fake.containers["srv"].stdin == []


STOP_FAILURES = [
    # (failing method, calls of it to let pass, signals the container ignores, stop kind)
    pytest.param("signal", 0, (), "signal", id="graceful-signal"),
    pytest.param("write", 0, (), "command", id="stop-command"),
    pytest.param("signal", 1, ("SIGTERM",), "signal", id="kill-after-timeout"),
]


async def _failed_stop(rig: Rig, fake: FakeEnvironment, method: str, after: int, ignored: tuple[str, ...],
                       stop: str) -> tuple[Server, Recorder]:
    """A running server whose stop fails with the engine away at `method`."""
    server = await rig.running(stop={"type": stop, "value": "SIGTERM" if stop == "signal" else "stop"})
    fake.ignore("srv", *ignored)
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, DockerUnavailable("engine gone"), after=after)
    with pytest.raises(DockerUnavailable):
        await rig.manager.power_and_wait("srv", "stop", timeout=0.05)
    return server, log


@pytest.mark.parametrize(("method", "after", "ignored", "stop"), STOP_FAILURES)
async def test_stop_fails_with_the_engine_away(rig: Rig, fake: FakeEnvironment, method: str, after: int,
                                               ignored: tuple[str, ...], stop: str):
    server, log = await _failed_stop(rig, fake, method, after, ignored, stop)
    assert fake.containers["srv"].running
    assert server.state != "offline"  # not shown stopped while it runs
    assert not server.lock.locked
    assert log.typed("error") == [{"type": "error", "action": "stop", "message": "engine gone"}]
    assert "stop failed: engine gone" in log.messages()
    await rig.manager.power_and_wait("srv", "stop", timeout=0.05)  # the stop can be asked for again
    assert_offline(server, fake)


@pytest.mark.parametrize(("method", "after", "ignored", "stop"), STOP_FAILURES)
async def test_stop_that_failed_shows_the_server_running(rig: Rig, fake: FakeEnvironment, method: str, after: int,
                                                         ignored: tuple[str, ...], stop: str):
    server, log = await _failed_stop(rig, fake, method, after, ignored, stop)
    assert server.state == "running" and server.record["state"] == "running"
    assert log.types()[-2:] == ["running", "error"]
    fake.exit("srv", 1)  # an exit after the failed stop is a crash again: nobody asked for it any more
    await until(lambda: server.state == "offline")
    assert "crashed" in log.types()


async def test_typed_stop_command_that_fails_shows_the_server_running(rig: Rig, fake: FakeEnvironment):
    server = await rig.running(stop={"type": "command", "value": "stop"})
    log = Recorder(rig.events, "srv")
    fake.fail_next("write", DockerUnavailable("engine gone"))
    with pytest.raises(DockerUnavailable):
        await rig.manager.send_command("srv", "stop")
    assert server.state == "running" and log.types() == ["stopping", "running"]
    await rig.manager.send_command("srv", "stop")  # typed again, it goes through
    assert server.state == "stopping" and fake.containers["srv"].stdin == [b"stop\n"]


# -- restart ------------------------------------------------------------------------------------------
RESTART_STEPS = [
    # (failing method, calls of it to let pass): the stop half, then the start half
    ("signal", 0),
    ("status", 1),  # the first status read is the stopped container's exit
    ("is_current", 0),
    ("attach", 0),
    ("start", 0),
]


@pytest.mark.parametrize(("method", "after"), RESTART_STEPS)
async def test_restart_fails_at_each_step(rig: Rig, fake: FakeEnvironment, method: str, after: int):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, EngineError(f"{method} broke"), after=after)
    with pytest.raises(EngineError) if method != "signal" else nullcontext():
        await rig.manager.power_and_wait("srv", "restart", timeout=0.05)
    if method == "signal":  # the graceful stop failed: killed after the timeout, then started
        assert server.state == "running" and fake.signals == [("srv", "SIGKILL")]
        assert "error" not in log.types()
    else:
        assert_offline(server, fake)
        assert {"type": "error", "action": "restart", "message": f"{method} broke"} in log.typed("error")
        assert f"restart failed: {method} broke" in log.messages()
    assert not server.lock.locked
    assert "crashed" not in log.types()
    if server.state == "offline":
        await assert_healthy_again(rig, server)


async def test_restart_whose_stop_fails_with_the_engine_away(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.fail_next("signal", DockerUnavailable("engine gone"))
    with pytest.raises(DockerUnavailable):
        await rig.manager.power_and_wait("srv", "restart")
    assert fake.containers["srv"].running and fake.calls.count("start") == 1  # not started a second time
    assert not server.lock.locked
    assert log.typed("error") == [{"type": "error", "action": "restart", "message": "engine gone"}]


# -- kill ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error_type", ERRORS)
async def test_kill_that_fails_leaves_the_server_running(rig: Rig, fake: FakeEnvironment,
                                                         error_type: type[LightdError]):
    server = await rig.running()
    fake.fail_next("signal", error_type("kill refused"))
    with pytest.raises(error_type):
        await rig.manager.power_and_wait("srv", "kill")
    assert server.state == "running" and fake.containers["srv"].running
    assert not server.lock.locked
    await rig.manager.power_and_wait("srv", "kill")
    assert_offline(server, fake)


async def test_kill_that_fails_is_reported(rig: Rig, fake: FakeEnvironment):
    await rig.running()
    log = Recorder(rig.events, "srv")
    fake.fail_next("signal", EngineError("kill refused"))
    await rig.manager.power("srv", "kill")
    await until(lambda: log.typed("error"), timeout=0.3)
    assert log.typed("error") == [{"type": "error", "action": "kill", "message": "kill refused"}]
    assert "kill failed: kill refused" in log.messages()


async def test_an_exit_after_a_failed_kill_is_a_crash(rig: Rig, fake: FakeEnvironment):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.fail_next("signal", EngineError("kill refused"))
    with pytest.raises(EngineError):
        await rig.manager.power_and_wait("srv", "kill")
    fake.exit("srv", 1)
    await until(lambda: server.state == "offline")
    assert log.types() == ["error", "exit", "crashed", "offline"]
