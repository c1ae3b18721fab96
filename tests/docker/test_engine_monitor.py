"""EngineMonitor: the engine's event stream about server containers as dataclasses, against the real engine;
it reconnects after the stream is cut."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lightd.config import DockerConfig
from lightd.docker.client import DockerClient
from lightd.docker.environment import LABEL_ID, LABEL_ROLE
from lightd.docker.monitor import EngineMonitor, container_event
from lightd.servers.environment import (
    ContainerDestroyed,
    ContainerDied,
    ContainerOomKilled,
    ContainerPaused,
    ContainerStarted,
    ContainerUnpaused,
    EngineEvent,
    EventStreamDown,
    EventStreamUp,
)
from lightd.tasks import TaskOwner
from tests.conftest import TEST_IMAGE

SOCKET = DockerConfig().socket


def record(action: str, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "time": 1700000000, "timeNano": 1700000000_500000000,
            "Actor": {"ID": "abc", "Attributes": {LABEL_ID: "srv", **attributes}}}


def test_records_become_dataclasses() -> None:
    assert container_event(record("die", exitCode="137"), LABEL_ID) == ContainerDied("srv", 137, 1700000000.5)
    assert container_event(record("die"), LABEL_ID) == ContainerDied("srv", None, 1700000000.5)
    assert container_event(record("start"), LABEL_ID) == ContainerStarted("srv", 1700000000.5)
    assert container_event(record("oom"), LABEL_ID) == ContainerOomKilled("srv", 1700000000.5)
    assert container_event(record("destroy"), LABEL_ID) == ContainerDestroyed("srv", 1700000000.5)
    assert container_event(record("pause"), LABEL_ID) == ContainerPaused("srv", 1700000000.5)
    assert container_event(record("unpause"), LABEL_ID) == ContainerUnpaused("srv", 1700000000.5)
    # Anything else is not an event of a server container.
    assert container_event(record("exec_die"), LABEL_ID) is None
    assert container_event({**record("die"), "Type": "network"}, LABEL_ID) is None
    assert container_event({"Type": "container", "Action": "die", "Actor": {"Attributes": {}}}, LABEL_ID) is None


class Follower:
    """Reads a monitor's events in the background into a queue the test waits on."""

    def __init__(self, monitor: EngineMonitor) -> None:
        self.monitor = monitor
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._tasks = TaskOwner("test")
        self._task = self._tasks.spawn(self._run(), name="follow")

    async def _run(self) -> None:
        async with contextlib.aclosing(self.monitor.events()) as events:
            async for event in events:
                await self.events.put(event)

    async def next(self, kind: type, timeout: float = 15) -> Any:
        """The next event of `kind` (others before it are skipped)."""
        async with asyncio.timeout(timeout):
            while not isinstance(event := await self.events.get(), kind):
                pass
        return event

    async def close(self) -> None:
        await self._tasks.close()


@pytest.fixture
async def follower(container_prefix: str) -> AsyncIterator[Follower]:
    client = DockerClient(SOCKET)
    monitor = EngineMonitor(client, {"lightd.prefix": container_prefix, LABEL_ROLE: "server"}, LABEL_ID)
    follower = Follower(monitor)
    yield follower
    await follower.close()
    assert monitor.stream is None  # closing the iteration dropped the connection
    await client.close()


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def run_labelled(prefix: str, internal_id: str, role: str = "server") -> str:
    return docker("run", "-d", "--name", f"{prefix}{internal_id}", "--label", f"lightd.prefix={prefix}",
                  "--label", f"{LABEL_ROLE}={role}", "--label", f"{LABEL_ID}={internal_id}", TEST_IMAGE, "sleep", "1000")


async def test_start_pause_die_and_destroy_of_server_containers(follower: Follower, container_prefix: str) -> None:
    await follower.next(EventStreamUp)
    # Another prefix's container and an installer are not followed.
    await asyncio.to_thread(run_labelled, container_prefix, "inst", "installer")
    await asyncio.to_thread(run_labelled, container_prefix, "srv")
    started = await follower.next(ContainerStarted)
    assert started.internal_id == "srv" and started.time > 0
    await asyncio.to_thread(docker, "pause", f"{container_prefix}srv")
    assert (await follower.next(ContainerPaused)).internal_id == "srv"
    await asyncio.to_thread(docker, "unpause", f"{container_prefix}srv")
    assert (await follower.next(ContainerUnpaused)).internal_id == "srv"
    await asyncio.to_thread(docker, "kill", f"{container_prefix}srv")
    died = await follower.next(ContainerDied)
    assert (died.internal_id, died.exit_code) == ("srv", 137)
    await asyncio.to_thread(docker, "rm", "-f", f"{container_prefix}srv", f"{container_prefix}inst")
    assert (await follower.next(ContainerDestroyed)).internal_id == "srv"
    await asyncio.sleep(0.5)
    seen = []
    while not follower.events.empty():
        seen.append(follower.events.get_nowait())
    assert all(getattr(event, "internal_id", "srv") == "srv" for event in seen), seen


async def test_reconnects_after_the_stream_is_cut(follower: Follower, container_prefix: str) -> None:
    await follower.next(EventStreamUp)
    first = follower.monitor.stream
    assert first is not None
    first.close()  # the connection to the engine is cut
    await follower.next(EventStreamDown)
    await follower.next(EventStreamUp, timeout=10)
    assert follower.monitor.stream is not None and follower.monitor.stream is not first
    # Events flow again on the new connection.
    await asyncio.to_thread(run_labelled, container_prefix, "again")
    assert (await follower.next(ContainerStarted)).internal_id == "again"


async def test_an_unreachable_engine_is_retried_not_raised(tmp_path: Any) -> None:
    client = DockerClient(f"unix://{tmp_path}/no-docker.sock")
    monitor = EngineMonitor(client, {"lightd.prefix": "nobody-"}, LABEL_ID)
    follower = Follower(monitor)
    await asyncio.sleep(1.2)  # a few attempts, each failing
    assert follower.events.empty() and monitor.stream is None and not follower._task.done()
    await follower.close()
    await client.close()
