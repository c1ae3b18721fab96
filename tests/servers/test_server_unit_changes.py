"""An engine error at each step of install, reinstall and rebind (a real ServerManager on a
FakeEnvironment): the server ends in a truthful state, the lock is released and the failure is published
(an install's as the `failed` install state, the others' as an `error` event)."""

from __future__ import annotations

import pytest

from lightd.errors import DockerUnavailable, EngineError, LightdError
from lightd.servers.models import RebindRequest, ReinstallRequest
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

SCRIPT = "#!/bin/sh\necho installed\n"


async def reinstall_ready(rig: Rig, server: Server) -> None:
    """The failure left nothing behind: a reinstall with the engine well again ends ready."""
    await rig.manager.reinstall(server.id, ReinstallRequest())
    await server.install_task
    assert server.install_state == "ready" and not server.lock.locked
    assert rig.env.containers[server.id].spec == server.spec


# -- install ------------------------------------------------------------------------------------------
INSTALL_STEPS = ["ensure_image", "create", "run_install"]


@pytest.mark.parametrize("method", INSTALL_STEPS)
async def test_install_fails_at_each_step(rig: Rig, fake: FakeEnvironment, method: str):
    fake.fail_next(method, EngineError(f"{method} broke"))
    server = await rig.server(install=False, install_script=SCRIPT)
    log = Recorder(rig.events, "srv")
    assert await server.install_task is None
    assert server.install_state == "failed" and server.state == "offline"
    assert not server.lock.locked
    stored = await rig.stored("srv")
    assert stored["install_state"] == "failed" and stored["install_error"].startswith(f"{method} broke")
    assert {"type": "install_step", "step": "Error", "error": f"{method} broke"} in log.typed("install_step")
    assert [w["error"].splitlines()[0] for w in log.typed("failed")] == [f"{method} broke"]
    assert "ready" not in log.types()
    with pytest.raises(LightdError, match="failed, not ready"):
        await rig.manager.power("srv", "start")
    await reinstall_ready(rig, server)


async def test_install_script_that_fails(rig: Rig, fake: FakeEnvironment):
    fake.install_exit_code = 3
    fake.install_output = b"E: package not found\n"
    server = await rig.server(install=False, install_script=SCRIPT)
    await server.install_task
    assert server.install_state == "failed" and not server.lock.locked
    error = server.record["install_error"]
    assert error.startswith("install script exited with code 3") and "E: package not found" in error
    fake.install_exit_code = 0
    await reinstall_ready(rig, server)


async def test_create_with_the_engine_away_records_nothing(rig: Rig, fake: FakeEnvironment):
    [port] = await rig.add_ports(25565)
    fake.up = False
    with pytest.raises(DockerUnavailable):
        await rig.server(ports=[port.model_dump()])
    assert "srv" not in rig.manager
    assert await rig.store.get_container("srv") is None
    assert [p["in_use"] for p in await rig.ports.list()] == [False]


# -- reinstall ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ensure_image", "create", "run_install"])
async def test_reinstall_fails_in_its_install(rig: Rig, fake: FakeEnvironment, method: str):
    server = await rig.running(install_script=SCRIPT)
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, EngineError(f"{method} broke"))
    await rig.manager.reinstall("srv", ReinstallRequest(startup_command="run --v2"))
    assert server.install_state == "installing"  # shown at once
    await server.install_task
    assert server.install_state == "failed" and server.state == "offline"
    assert not server.lock.locked
    assert not fake.containers.get("srv") or not fake.containers["srv"].running
    assert log.types()[:3] == ["stopping", "exit", "offline"]
    assert [w["error"].splitlines()[0] for w in log.typed("failed")] == [f"{method} broke"]
    assert server.spec.startup_command == "run --v2"  # the new spec is kept for the next reinstall
    await reinstall_ready(rig, server)


REINSTALL_BEFORE_INSTALL = [
    pytest.param("signal", DockerUnavailable, id="stop"),
    pytest.param("remove", EngineError, id="remove"),
]


async def _failed_reinstall(rig: Rig, fake: FakeEnvironment, method: str,
                            error_type: type[LightdError]) -> tuple[Server, Recorder]:
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, error_type(f"{method} broke"))
    await rig.manager.reinstall("srv", ReinstallRequest())
    await server.install_task
    return server, log


@pytest.mark.parametrize(("method", "error_type"), REINSTALL_BEFORE_INSTALL)
async def test_reinstall_fails_before_its_install(rig: Rig, fake: FakeEnvironment, method: str,
                                                  error_type: type[LightdError]):
    server, log = await _failed_reinstall(rig, fake, method, error_type)
    assert not server.lock.locked
    assert log.typed("error")[-1] == {"type": "error", "action": "reinstall", "message": f"{method} broke"}
    assert "installing" not in log.types()  # the install never began
    assert "run_install" not in fake.calls and fake.calls.count("create") == 1
    if method == "signal":  # the stop failed: it runs on
        assert fake.containers["srv"].running
    else:
        assert server.state == "offline" and "srv" in fake.containers


@pytest.mark.parametrize(("method", "error_type"), REINSTALL_BEFORE_INSTALL)
async def test_reinstall_that_fails_before_its_install_can_be_retried(rig: Rig, fake: FakeEnvironment, method: str,
                                                                      error_type: type[LightdError]):
    """Nothing was changed: the install state is the one before (taken back unannounced, as `installing`
    was shown unannounced), stored; the failure is one `error` event of the reinstall."""
    server, log = await _failed_reinstall(rig, fake, method, error_type)
    assert server.install_state == "ready" and (await rig.stored("srv"))["install_state"] == "ready"
    assert not {"ready", "failed", "installing"} & set(log.types())
    assert log.typed("error") == [{"type": "error", "action": "reinstall", "message": f"{method} broke"}]
    assert f"reinstall failed: {method} broke" in log.messages()
    await reinstall_ready(rig, server)


async def test_reinstall_of_a_failed_install_that_fails_early_keeps_its_install_error(rig: Rig, fake: FakeEnvironment):
    fake.fail_next("run_install", EngineError("install broke"))
    server = await rig.server(install=False, install_script=SCRIPT)
    await server.install_task
    error = server.record["install_error"]
    fake.fail_next("remove", EngineError("remove broke"))
    await rig.manager.reinstall("srv", ReinstallRequest())
    await server.install_task
    stored = await rig.stored("srv")
    assert server.install_state == stored["install_state"] == "failed"
    assert stored["install_error"] == server.record["install_error"] == error
    await reinstall_ready(rig, server)


# -- rebind -------------------------------------------------------------------------------------------
REBIND_STEPS = [
    # (failing method, calls of it to let pass): the stop, the recreate, then the start again
    ("create", 0),
    ("status", 1),  # the first status read is the stopped container's exit
    ("attach", 0),
    ("start", 0),
]


async def _rebind(rig: Rig, fake: FakeEnvironment, method: str, after: int,
                  error: LightdError) -> tuple[Server, Recorder]:
    old = await rig.add_ports(25565)
    new = await rig.add_ports(25566)
    server = await rig.running(ports=[p.model_dump() for p in old])
    log = Recorder(rig.events, "srv")
    fake.fail_next(method, error, after=after)
    await rig.manager.rebind("srv", RebindRequest(ports=new))
    await until(lambda: not server.lock.locked)
    return server, log


async def held_ports(rig: Rig) -> list[int]:
    return sorted(p["port"] for p in await rig.ports.list() if p["container"] == "srv")


@pytest.mark.parametrize(("method", "after"), REBIND_STEPS)
async def test_rebind_fails_at_each_step(rig: Rig, fake: FakeEnvironment, method: str, after: int):
    server, log = await _rebind(rig, fake, method, after, EngineError(f"{method} broke"))
    assert server.state == "offline" and not fake.containers["srv"].running
    assert log.typed("error")[-1] == {"type": "error", "action": "rebind", "message": f"{method} broke"}
    assert ("network_rebound" in log.types()) == (method != "create")  # announced once recreated
    assert [p.port for p in server.spec.ports] == [25566]  # the new ports are the server's
    assert await held_ports(rig) == [25566]
    assert "crashed" not in log.types()
    await rig.manager.power_and_wait("srv", "start")
    assert server.state == "running" and fake.containers["srv"].spec == server.spec


async def test_rebind_whose_stop_fails_with_the_engine_away(rig: Rig, fake: FakeEnvironment):
    server, log = await _rebind(rig, fake, "signal", 0, DockerUnavailable("engine gone"))
    assert log.typed("error") == [{"type": "error", "action": "rebind", "message": "engine gone"}]
    assert fake.containers["srv"].running and fake.calls.count("create") == 1  # nothing recreated
    assert [p.port for p in server.spec.ports] == [25565]
    assert "network_rebound" not in log.types()


async def test_rebind_that_fails_early_releases_the_ports_it_claimed(rig: Rig, fake: FakeEnvironment):
    await _rebind(rig, fake, "signal", 0, DockerUnavailable("engine gone"))
    assert await held_ports(rig) == [25565]
