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


@pytest.mark.docker
async def test_a_removal_another_call_began_is_waited_for_not_refused(container_prefix: str, monkeypatch):
    """A delete racing an install's own clean-up: both force-remove the installer, and the engine refuses the
    second with "removal of container … is already in progress" (seen in CI). That is waited out."""
    client = DockerClient(DockerConfig().socket)
    waited: list[str] = []
    real_wait = client._wait_removed  # noqa: SLF001 - counted, to know the race was really run

    async def counted(name: str, refusal: Exception) -> None:
        waited.append(str(refusal))
        await real_wait(name, refusal)

    monkeypatch.setattr(client, "_wait_removed", counted)
    try:
        for round_ in range(10):  # bounded: the engine refuses the second removal in most rounds
            name = f"{container_prefix}twice{round_}"
            # It ignores SIGTERM and runs on: the forced removal must kill it first, which takes a while.
            await client.create_container(name, {"Image": TEST_IMAGE, "Cmd": ["sh", "-c", "trap '' TERM; sleep 1000"],
                                                  "Labels": {"lightd.prefix": container_prefix}})
            await client.start_container(name)
            await asyncio.gather(*(client.remove_container(name) for _ in range(3)))
            assert await client.inspect_container(name) is None
            if waited:
                break
        assert waited and "already in progress" in waited[0], waited
    finally:
        for round_ in range(10):
            await client.remove_container(f"{container_prefix}twice{round_}")
        await client.close()
