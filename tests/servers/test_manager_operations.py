"""The operations front ends share, as ServerManager methods: create-and-wait, exec, and each front end's
power verbs from one table; against the real engine."""

from __future__ import annotations

import asyncio

import pytest

from lightd import keys
from lightd.compat.power import POWER_VERBS, run_power
from lightd.errors import AlreadyExists, Conflict, NotFound, ValidationFailed
from lightd.servers.models import ContainerSpec
from tests.conftest import TEST_IMAGE
from tests.servers.helpers import create_server, wait_state


async def _spec(dclient, internal_id: str, **fields) -> ContainerSpec:
    volume = await dclient.app[keys.VOLUMES].create()
    return ContainerSpec.model_validate({
        "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
        "startup_command": "echo ready; sleep 1000", "owned_volume": True, **fields,
    })


async def test_create_and_wait_starts_and_a_failed_install_leaves_nothing(dclient):
    manager = dclient.app[keys.SERVERS]
    volumes = dclient.app[keys.VOLUMES]
    server = await manager.create_and_wait(await _spec(dclient, "cw-ok"), start=True, timeout=60)
    assert server.state in ("starting", "running") and server.install_state == "ready"
    code, output = await manager.exec("cw-ok", ["echo", "inside"])
    assert (code, output.strip()) == (0, "inside")

    bad = await _spec(dclient, "cw-bad", install_script="echo broken\nexit 3\n")
    with pytest.raises(ValidationFailed, match="install failed"):
        await manager.create_and_wait(bad, start=True, timeout=60)
    assert "cw-bad" not in manager and manager.find("cw-bad") is None
    with pytest.raises(NotFound):
        await volumes.record(bad.volume_id)  # the owned volume went with the server


async def test_a_refused_create_and_wait_removes_the_volume_made_for_it(dclient):
    manager = dclient.app[keys.SERVERS]
    volumes = dclient.app[keys.VOLUMES]
    await manager.create_and_wait(await _spec(dclient, "cw-dup"), start=False, timeout=60)
    again = await _spec(dclient, "cw-dup")
    with pytest.raises(AlreadyExists):
        await manager.create_and_wait(again, start=False, timeout=60)
    with pytest.raises(NotFound):
        await volumes.record(again.volume_id)
    assert manager.get("cw-dup").state == "offline"  # the first one is untouched


async def test_exec_needs_a_running_server(dapi, dclient):
    await create_server(dapi, "ex-off")
    with pytest.raises(Conflict, match="not running"):
        await dclient.app[keys.SERVERS].exec("ex-off", ["true"])


async def test_power_verbs_from_one_table(dapi, dclient):
    manager = dclient.app[keys.SERVERS]
    await create_server(dapi, "pv", startup_command="echo ready; sleep 1000")
    # ProxiCloud's reboot of a stopped container is refused, worded by the front end.
    with pytest.raises(Conflict, match="Container 101 is not running"):
        await run_power(manager, "proxicloud", "reboot", "pv", label="Container 101")
    # LXD panel's stop of a stopped instance is a no-op, its start waits until the start is done.
    assert await run_power(manager, "lxd_panel", "stop", "pv") is False
    assert await run_power(manager, "lxd_panel", "start", "pv") is True
    assert manager.get("pv").state in ("starting", "running")
    assert await run_power(manager, "lxd_panel", "start", "pv") is False
    # ProxiCloud's `stop` is a hard stop answered at once.
    assert POWER_VERBS["proxicloud"]["stop"].action == "kill"
    await run_power(manager, "proxicloud", "stop", "pv")
    await wait_state(dapi, "pv", "offline")


async def test_run_shielded_survives_a_cancelled_caller_and_hands_back_errors(dclient):
    tasks = dclient.app[keys.TASKS]
    finished = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.2)
        finished.set()
        return "done"

    caller = asyncio.ensure_future(tasks.run_shielded(work(), name="test:shielded"))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(finished.wait(), 5)  # the work was not cut in half

    async def failing() -> None:
        raise Conflict("busy")

    with pytest.raises(Conflict, match="busy"):
        await tasks.run_shielded(failing(), name="test:failing")
