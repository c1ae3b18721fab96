"""EngineWatch on a FakeEnvironment whose event stream the test drives: the poll runs only while the stream
is down, a die event is handled once, a destroy marks the container missing. The real-engine tests are
test_engine_watch.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lightd.servers.engine_watch import EngineWatch
from lightd.servers.environment import (
    ContainerDestroyed,
    ContainerDied,
    EngineEvent,
    EventStreamDown,
    EventStreamUp,
)
from lightd.servers.server import Server
from tests.servers.fake_environment import FakeEnvironment
from tests.servers.unit_rig import Recorder, Rig, make_rig_fixture, rig_fixture, until  # noqa: F401 - fixtures

POLL = 0.05


class FakeEngineEvents(FakeEnvironment):
    """The fake environment with an event stream: what the test `emit`s."""

    def __init__(self) -> None:
        super().__init__()
        self.stream: asyncio.Queue[EngineEvent] = asyncio.Queue()

    def emit(self, *events: EngineEvent) -> None:
        for event in events:
            self.stream.put_nowait(event)

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            yield await self.stream.get()


@pytest.fixture(name="fake")
def fake_fixture() -> FakeEngineEvents:
    return FakeEngineEvents()


@pytest.fixture
async def watch(rig: Rig, fake: FakeEngineEvents) -> Any:
    task = rig.tasks.spawn(EngineWatch(rig.manager, fake, POLL).run(), name="engine-monitor")
    yield
    task.cancel()


async def detach(rig: Rig, server: Server) -> None:
    """The console stream is gone and nothing re-attached (what an engine blip leaves)."""
    # After the round the stream's connection runs (the load's was the first): that round would re-attach it.
    await until(lambda: rig.manager.recovery.rounds >= 2)
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == f"unit:console:{server.id}"]
    task.cancel()
    await asyncio.wait([task])
    assert server.detached


def exit_quietly(fake: FakeEnvironment, internal_id: str, code: int) -> None:
    """The container ends without any console stream noticing."""
    container = fake.containers[internal_id]
    container.consoles.clear()
    fake.exit(internal_id, code)


async def test_while_the_stream_is_up_the_engine_is_not_polled(rig: Rig, fake: FakeEngineEvents, watch: None):
    server = await rig.running()
    fake.emit(EventStreamUp())
    await until(lambda: rig.manager.engine_up)
    fake.calls.clear()
    await asyncio.sleep(POLL * 6)
    assert "available" not in fake.calls
    # A detached server is still picked up at the poll's pace, without asking the engine whether it is up.
    await detach(rig, server)
    await until(lambda: server.attached)
    assert "available" not in fake.calls


async def test_while_the_stream_is_down_the_poll_finds_the_crash(rig: Rig, fake: FakeEngineEvents, watch: None):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.emit(EventStreamUp(), EventStreamDown("cut"))
    await detach(rig, server)
    exit_quietly(fake, "srv", 1)
    await until(lambda: server.state == "offline")
    assert "available" in fake.calls
    assert log.types().count("crashed") == 1


async def test_a_die_event_of_a_detached_server_is_one_crash(rig: Rig, fake: FakeEngineEvents, ):
    # No poll here: only the event can explain the crash.
    task = rig.tasks.spawn(EngineWatch(rig.manager, fake, 3600).run(), name="engine-monitor")
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.emit(EventStreamUp())
    await detach(rig, server)
    exit_quietly(fake, "srv", 137)
    fake.emit(ContainerDied("srv", 137, 0.0), ContainerDied("srv", 137, 0.0))
    await until(lambda: server.state == "offline")
    await asyncio.sleep(0.05)
    assert log.types().count("crashed") == 1
    assert (await rig.stored("srv"))["exit_code"] == 137
    task.cancel()


async def test_a_die_event_and_the_console_stream_end_make_one_crash(rig: Rig, fake: FakeEngineEvents, watch: None):
    server = await rig.running()
    log = Recorder(rig.events, "srv")
    fake.emit(EventStreamUp())
    fake.exit("srv", 137)  # the console stream ends
    fake.emit(ContainerDied("srv", 137, 0.0))
    await until(lambda: server.state == "offline")
    await asyncio.sleep(POLL * 4)
    assert log.types().count("crashed") == 1


async def test_a_destroy_marks_the_container_missing(rig: Rig, fake: FakeEngineEvents, watch: None):
    server = await rig.running()
    fake.emit(EventStreamUp())
    await fake.remove("srv")  # the console stream ends as well
    fake.emit(ContainerDestroyed("srv", 0.0))
    await until(lambda: server.container_missing and server.state == "offline")
