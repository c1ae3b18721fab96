"""The one private attribute of aiodocker lightd reads (`Stream._resp`, through
lightd.docker.client.stream_response): a release that drops or renames it fails here, not in production.
pyproject.toml pins aiodocker to the releases checked."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiodocker.stream import Stream

from lightd.config import DockerConfig
from lightd.docker.client import DockerClient, stream_response
from tests.conftest import TEST_IMAGE


async def _never_called() -> Any:
    raise AssertionError("the stream was not connected")


def test_a_stream_keeps_its_response_in_resp():
    stream = Stream(docker=None, setup=_never_called)  # type: ignore[arg-type]
    assert "_resp" in vars(stream), "aiodocker.stream.Stream no longer has _resp: see stream_response()"
    assert stream_response(stream) is None


@pytest.mark.docker
async def test_an_attached_stream_exposes_its_connection(container_prefix: str):
    client = DockerClient(DockerConfig().socket)
    name = f"{container_prefix}internals"
    try:
        await client.create_container(name, {"Image": TEST_IMAGE, "Cmd": ["true"], "OpenStdin": True})
        stream = client.attach(name)
        async with stream:
            response = stream_response(stream)
            assert isinstance(response, aiohttp.ClientResponse)
            assert response.connection is not None and response.connection.transport is not None
    finally:
        await client.remove_container(name)
        await client.close()
