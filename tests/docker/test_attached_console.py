"""AttachedConsole: a console stream is always closed, also when aiodocker's own close gives up."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightd.config import DockerConfig
from lightd.docker.attached_console import AttachedConsole
from lightd.docker.environment import DockerEnvironment
from lightd.errors import DockerUnavailable
from lightd.servers.mounts import MountPins


class Response:
    def __init__(self) -> None:
        self.closed = False
        self.connection = None  # the engine went away: aiodocker's close asserts on this

    def close(self) -> None:
        self.closed = True


class DeadStream:
    def __init__(self) -> None:
        self._resp = Response()

    async def close(self) -> None:
        assert self._resp.connection is not None  # what aiodocker's Stream.close does


class FailingConnect(DeadStream):
    async def __aenter__(self) -> FailingConnect:
        raise ConnectionResetError("engine gone during the upgrade")


async def test_close_closes_the_response_when_the_stream_cannot():
    stream = DeadStream()
    await AttachedConsole(stream).close()
    assert stream._resp.closed


async def test_a_failed_attach_closes_its_half_made_stream():
    stream = FailingConnect()

    class Client:
        def attach(self, name: str) -> FailingConnect:
            assert name == "lightd-x"
            return stream

    env = DockerEnvironment(Client(), DockerConfig(container_prefix="lightd-"), MountPins(Path("/nonexistent"), []))  # type: ignore[arg-type]
    with pytest.raises(DockerUnavailable):
        await env.attach("x")
    assert stream._resp.closed
