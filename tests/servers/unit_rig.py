"""A real ServerManager on a FakeEnvironment, built as lightd/app.py builds it (real Store, EventBus,
TaskOwner, PortPool, VolumeService, MountPins): the fixture of the fast server unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from lightd.config import Config, secure_data_dir
from lightd.events import EventBus
from lightd.ports import PortPool, PortSpec
from lightd.servers.manager import ServerManager
from lightd.servers.models import ContainerSpec
from lightd.servers.mounts import MountPins
from lightd.servers.server import Server
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.volumes.service import VolumeService
from tests.servers.fake_environment import FakeEnvironment


class Recorder:
    """Every event the bus publishes for one server, from the moment it is made."""

    def __init__(self, bus: EventBus, server: str) -> None:
        self.sub = bus.subscribe(server=server, maxsize=100_000)
        self.events: list[Any] = []

    def drain(self) -> list[Any]:
        while (event := self.sub.get_nowait()) is not None:
            self.events.append(event)
        return self.events

    def of(self, kind: str) -> list[Any]:
        return [e.data for e in self.drain() if e.kind == kind]

    def wires(self) -> list[dict[str, Any]]:
        """Every lifecycle event in its JSON shape (`{"type": ..., <fields>}`), in order."""
        return [getattr(data, "wire", data) for data in self.of("event")]

    def types(self) -> list[str]:
        return [wire["type"] for wire in self.wires()]

    def typed(self, event_type: str) -> list[dict[str, Any]]:
        return [wire for wire in self.wires() if wire["type"] == event_type]

    def messages(self) -> list[str]:
        return self.of("daemon_message")

    def lines(self) -> list[str]:
        return [line for chunk in self.of("console") for line in chunk]

    def clear(self) -> None:
        self.drain()
        self.events.clear()


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Wait until `predicate()` is truthy (tasks and SQLite writes run in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
    return value


class Rig:
    def __init__(self, config: Config, env: FakeEnvironment) -> None:
        self.config = config
        self.env = env

    async def open(self) -> None:
        config = self.config
        await asyncio.to_thread(secure_data_dir, config)
        self.store = Store(config.db_path)
        await self.store.open()
        self.tasks = TaskOwner("unit")
        self.events = EventBus(config.event_queue_size)
        self.ports = PortPool(self.store)
        self.volumes = VolumeService(config.volumes_dir, self.store, config.volumes,
                                     restores=config.volume_restores_dir)
        await self.volumes.open()
        self.mounts = MountPins(config.mounts_dir, config.docker.allowed_mounts)
        self.manager = ServerManager(
            config=config, store=self.store, env=self.env, events=self.events, tasks=self.tasks,
            ports=self.ports, volumes=self.volumes, mounts=self.mounts,
        )
        await self.manager.load()

    async def close(self) -> None:
        await self.tasks.close(timeout=5)
        self.events.close()
        await self.store.close()

    async def add_ports(self, *numbers: int) -> list[PortSpec]:
        specs = [PortSpec(ip="127.0.0.1", port=n) for n in numbers]
        for spec in specs:
            await self.ports.add(spec)
        return specs

    async def server(self, internal_id: str = "srv", *, install: bool = True, **fields: Any) -> Server:
        """A new server (installed unless `install` is False: then its install is still running)."""
        volume = await self.volumes.create()
        spec = ContainerSpec.model_validate({
            "internal_id": internal_id, "image": "busybox:latest", "volume_id": volume["volume_id"],
            "startup_command": "run", **fields})
        await self.manager.create(spec)
        server = self.manager.get(internal_id)
        if install:
            await server.install_task
            assert server.install_state == "ready", server.record.get("install_error")
        return server

    async def running(self, internal_id: str = "srv", **fields: Any) -> Server:
        """An installed server that is running (its start pattern, if any, matched)."""
        server = await self.server(internal_id, **fields)
        await self.manager.power_and_wait(internal_id, "start")
        if server.state == "starting":
            self.env.print(internal_id, fields.get("start_pattern") or "")
            await until(lambda: server.state == "running")
        assert server.state == "running"
        return server

    async def stored(self, internal_id: str) -> dict[str, Any]:
        record = await self.store.get_container(internal_id)
        assert record is not None
        return record


@pytest.fixture(name="fake")
def fake_fixture() -> FakeEnvironment:
    return FakeEnvironment()


@pytest.fixture(name="make_rig")
async def make_rig_fixture(make_config: Callable[..., Config], fake: FakeEnvironment, no_blocking_calls: None) -> Any:
    """Rigs on the one FakeEnvironment, with config overrides; each closed at the end of the test."""
    made: list[Rig] = []

    async def make(**overrides: Any) -> Rig:
        rig = Rig(make_config(**overrides), fake)
        made.append(rig)
        await rig.open()
        return rig

    yield make
    for rig in made:
        await rig.close()


@pytest.fixture(name="rig")
async def rig_fixture(make_rig: Callable[..., Any]) -> Rig:
    return await make_rig()
