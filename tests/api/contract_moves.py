"""The contract test's calls of the server-transfer routes (tests/api/test_openapi_contract.py).

- Target side, on the contract's app: the test plays the source of lightd/transfers/protocol.py — an offer
  (POST /transfers) listed and cancelled, then a second offer and its framed tar + zstd stream (PUT), which
  creates the server `arrived` there.
- Source side: `arrived` moves on to a second lightd app (its own data_dir, API port and container prefix);
  before that, a transfer to a node that never answers is started and cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import secrets
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from aiohttp.test_utils import TestClient

from lightd.app import create_app
from lightd.transfers.protocol import data_header, end_frame
from tests.conftest import TEST_IMAGE, VENDOR, remove_containers, wait_for
from tests.transfers.conftest import node_config

OUT = "/containers/{container_id}/transfer"
IN = "/transfers/{transfer_id}"


@dataclass
class Node:
    client: TestClient
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")


@pytest.fixture(name="second_prefix")
def second_prefix_fixture(docker_engine: str) -> Any:
    prefix = f"lightdtest-{secrets.token_hex(3)}-"
    yield prefix
    remove_containers(prefix)


@pytest.fixture(name="second_node")
async def second_node_fixture(aiohttp_client: Callable[..., Any], tmp_path: Path, second_prefix: str) -> Node:
    """Another lightd node on loopback, against the same engine: the target of a real move."""
    config = node_config(tmp_path / "second", second_prefix)
    return Node(await aiohttp_client(create_app(config)), {"Authorization": f"Bearer {config.token}", "Accept": VENDOR})


async def transfers_contract(c: Any, second: Node) -> None:
    await _receive(c)
    async with _silent_node() as silent:
        await c.call("POST", OUT, 202, json_body={"target_url": silent, "target_token": "lightd_" + "s" * 40},
                     container_id="arrived")
        cancelled = await c.call("DELETE", OUT, 200, container_id="arrived")
        assert cancelled["status"] == "cancelled", cancelled
        assert (await _ended(c, "arrived"))["status"] == "cancelled"
    async with second.client.post("/auth/tokens", json={"purpose": "transfer"}, headers=second.headers) as resp:
        assert resp.status == 201
        token = (await resp.json())["token"]
    await c.call("POST", OUT, 202, json_body={"target_url": second.url, "target_token": token}, container_id="arrived")
    done = await _ended(c, "arrived")
    assert done["status"] == "completed", done
    async with second.client.get("/containers/arrived", headers=second.headers) as resp:
        assert resp.status == 200 and (await resp.json())["install_state"] == "ready"


async def _receive(c: Any) -> None:
    """This node as a target, the test as the source: an offer cancelled, then one received whole."""
    minted = await c.call("POST", "/auth/tokens", 201, json_body={"purpose": "transfer"})
    source = {"Authorization": f"Bearer {minted['token']}", "Accept": VENDOR}
    dropped = _offer("dropped")
    await c.call("POST", "/transfers", 201, json_body=dropped, headers=source)
    listed = await c.call("GET", "/transfers", 200)
    assert [t["transfer_id"] for t in listed["transfers"]] == [dropped["transfer_id"]], listed
    await c.call("DELETE", IN, 200, headers=source, transfer_id=dropped["transfer_id"])
    offer = _offer("arrived")
    prepared = await c.call("POST", "/transfers", 201, json_body=offer, headers=source)
    assert prepared["status"] == "prepared", prepared
    received = await c.call("PUT", IN, 201, data=_stream({"hello.txt": b"moved in"}), headers=source,
                            transfer_id=offer["transfer_id"])
    assert received["container"]["install_state"] == "ready", received


def _offer(internal_id: str) -> dict[str, Any]:
    spec = {"internal_id": internal_id, "image": TEST_IMAGE, "volume_id": str(uuid.uuid4()),
            "startup_command": "sleep 1000"}
    return {"transfer_id": uuid.uuid4().hex, "spec": spec, "install_log": "installed elsewhere\n", "volume_bytes": 64}


def _stream(files: dict[str, bytes]) -> bytes:
    """The source's PUT body: `D` frames of the tar + zstd volume, then the `E` frame with its sha256."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    packed = zstandard.ZstdCompressor().compress(tar_bytes.getvalue())
    return data_header(len(packed)) + packed + end_frame(hashlib.sha256(packed).hexdigest(), len(packed))


async def _ended(c: Any, internal_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        view = await c.call("GET", OUT, 200, container_id=internal_id)
        return view if view["status"] != "running" else None

    return await wait_for(done, timeout=60, interval=0.2)


@contextlib.asynccontextmanager
async def _silent_node() -> AsyncIterator[str]:
    """A target that accepts connections and never answers (the transfer waits on its offer)."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
