"""DockerClient's attach and log read-back ask the engine once each (aiodocker's own inspect the container
first for its TTY flag; lightd's containers never have one): what they read is what aiodocker reads."""

from __future__ import annotations

import asyncio

import pytest

from lightd.config import DockerConfig
from lightd.docker.client import DockerClient, demultiplex
from lightd.errors import NotFound
from tests.conftest import TEST_IMAGE


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_demultiplex_joins_the_payloads_of_both_streams():
    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"tail")
    assert demultiplex(data) == b"out\nerr\ntail"
    assert demultiplex(data + b"\x01\x00\x00") == b"out\nerr\ntail"  # a cut header is not read past


@pytest.mark.docker
async def test_tail_logs_and_attach_against_the_engine(container_prefix: str):
    client = DockerClient(DockerConfig().socket)
    name = f"{container_prefix}streams"
    try:
        await client.create_container(name, {
            "Image": TEST_IMAGE, "OpenStdin": True, "AttachStdin": True, "Tty": False,
            "Cmd": ["sh", "-c", "echo out; echo err >&2; printf 'bad \\377\\n'; cat"],
            "HostConfig": {"LogConfig": {"Type": "local"}}})
        await client.start_container(name)
        for _ in range(100):
            if len(await client.tail_logs(name, 10)) == 3:
                break
            await asyncio.sleep(0.05)
        # stdout and stderr are copied by the engine apart: their order in the log is not the script's.
        assert sorted(await client.tail_logs(name, 10)) == ["bad \ufffd", "err", "out"]
        assert len(await client.tail_logs(name, 2)) == 2
        # What aiodocker's own `log` (inspect, then logs) reads, line for line, but an undecodable byte: it
        # drops it, the read-back shows it replaced as the live console does (servers/console.py).
        chunks = await client.raw.containers.container(name).log(stdout=True, stderr=True, tail=10)
        assert "".join(chunks).splitlines() == [line.replace("\ufffd", "") for line in await client.tail_logs(name, 10)]
        stream = client.attach(name)
        async with stream:
            await stream.write_in(b"echoed\n")
            message = await asyncio.wait_for(stream.read_out(), 10)
            assert message is not None and message.data == b"echoed\n"
        with pytest.raises(NotFound):
            await client.tail_logs(f"{container_prefix}absent", 5)
    finally:
        await client.remove_container(name)
        await client.close()
