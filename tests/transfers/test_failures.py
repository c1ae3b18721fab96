"""Transfers that fail or are cancelled leave the server on the source exactly as it was (files, state, and
running again if it ran) and nothing on the target: a damaged stream (a proxy flips one byte), the target
killed mid-stream (a real daemon process, kill -9), a cancel from either side, and what a transfer refuses
while it runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lightd import keys
from tests.conftest import wait_for
from tests.reliability.daemon import Daemon
from tests.servers.helpers import get, wait_state
from tests.transfers.conftest import Nodes
from tests.transfers.helpers import ended, server_on, start, transfer_token, tree_digest
from tests.transfers.proxy import Proxy

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]
SLOW = {"transfers": {"min_free_bytes": 0, "stop_timeout_seconds": 3, "rate_limit_mib_s": 1}}


def random_files(megabytes: int) -> dict[str, bytes | str]:
    return {**{f"data/chunk{i}.bin": os.urandom(1024 * 1024) for i in range(megabytes)}, "cfg/a.txt": "a\n" * 100}


async def target_is_clean(nodes: Nodes, internal_id: str, volume_id: str) -> None:
    async def clean() -> bool:
        _, incoming = await nodes.target.get("/transfers")
        return incoming["count"] == 0
    await wait_for(clean, timeout=30)
    status, _ = await nodes.target.get(f"/containers/{internal_id}")
    assert status == 404
    _, volumes = await nodes.target.get("/volumes")
    assert volume_id not in [v["volume_id"] for v in volumes["volumes"]]
    assert not list(nodes.target_client.app[keys.CONFIG].transfers_dir.iterdir())
    assert not (nodes.target_client.app[keys.CONFIG].volumes_dir / volume_id).exists()


async def sending(nodes: Nodes, internal_id: str, at_least: int = 1) -> dict[str, Any]:
    async def moving() -> dict[str, Any] | None:
        _, view = await nodes.source.get(f"/containers/{internal_id}/transfer")
        assert view["status"] == "running", view
        return view if view["phase"] == "sending" and view["bytes_sent"] >= at_least else None
    return await wait_for(moving, timeout=30, interval=0.05)


async def test_checksum_mismatch_refuses_and_keeps_the_server(nodes: Nodes) -> None:
    root = await server_on(nodes.source, "damaged", random_files(4))
    before = tree_digest(root)
    volume_id = (await get(nodes.source, "damaged"))["volume_id"]
    proxy = await Proxy(nodes.target_url, flip_at=300_000).start()
    try:
        await start(nodes.source, "damaged", proxy.url, await transfer_token(nodes.target))
        done = await ended(nodes.source, "damaged")
    finally:
        await proxy.close()
    assert done["status"] == "failed" and "checksum mismatch" in done["error"], done
    kept = await get(nodes.source, "damaged")
    assert kept["state"] == "offline" and tree_digest(root) == before
    await target_is_clean(nodes, "damaged", volume_id)


async def test_cancel_from_either_side(make_nodes: Any) -> None:
    nodes: Nodes = await make_nodes(source=SLOW)
    root = await server_on(nodes.source, "cancelled", random_files(6))
    before = tree_digest(root)
    volume_id = (await get(nodes.source, "cancelled"))["volume_id"]
    token = await transfer_token(nodes.target)

    # from the source
    await start(nodes.source, "cancelled", nodes.target_url, token)
    await sending(nodes, "cancelled")
    status, view = await nodes.source.delete("/containers/cancelled/transfer")
    assert status == 200 and view["status"] == "cancelled", view
    done = await ended(nodes.source, "cancelled")
    assert done["status"] == "cancelled" and done["error"] == "cancelled", done
    await target_is_clean(nodes, "cancelled", volume_id)
    status, _ = await nodes.source.delete("/containers/cancelled/transfer")
    assert status == 404  # nothing runs any more

    # from the target, with the same transfer id
    view = await start(nodes.source, "cancelled", nodes.target_url, token)
    await sending(nodes, "cancelled")

    async def receiving() -> bool:
        _, incoming = await nodes.target.get("/transfers")
        return [t["status"] for t in incoming["transfers"]] == ["receiving"]
    await wait_for(receiving, timeout=10, interval=0.05)
    status, answer = await nodes.target.delete(f"/transfers/{view['transfer_id']}")
    assert status == 200 and answer["status"] == "cancelled", answer
    done = await ended(nodes.source, "cancelled")
    assert done["status"] == "failed" and "cancelled on the target" in done["error"], done
    await target_is_clean(nodes, "cancelled", volume_id)
    assert (await get(nodes.source, "cancelled"))["state"] == "offline"
    assert tree_digest(root) == before


async def test_a_running_transfer_refuses_power_writes_and_a_second_transfer(make_nodes: Any) -> None:
    nodes: Nodes = await make_nodes(source=SLOW)
    await server_on(nodes.source, "busy", random_files(6), startup_command="sleep 1000")
    volume_id = (await get(nodes.source, "busy"))["volume_id"]
    assert (await nodes.source.post("/containers/busy/start"))[0] == 202
    await wait_state(nodes.source, "busy", "running")
    token = await transfer_token(nodes.target)
    await start(nodes.source, "busy", nodes.target_url, token)
    status, answer = await nodes.source.post("/containers/busy/transfer",
                                             json={"target_url": nodes.target_url, "target_token": token})
    assert status == 409, answer
    await sending(nodes, "busy")
    assert (await get(nodes.source, "busy"))["state"] == "transferring"
    for action in ("start", "restart", "stop", "kill"):
        status, answer = await nodes.source.post(f"/containers/busy/{action}")
        assert status == 409 and answer["code"] == "server_transferring", (action, answer)
    status, answer = await nodes.source.post(f"/volumes/{volume_id}/files", json={"path": "x.txt", "content": "x"})
    assert status == 409, answer
    status, _ = await nodes.source.delete("/containers/busy/transfer")
    assert status == 200
    assert (await ended(nodes.source, "busy"))["status"] == "cancelled"
    await wait_state(nodes.source, "busy", "running")  # it ran before: it runs again
    status, _ = await nodes.source.post(f"/volumes/{volume_id}/files", json={"path": "x.txt", "content": "x"})
    assert status in (200, 201)


async def test_target_killed_mid_stream(make_nodes: Any, tmp_path: Path, target_prefix: str) -> None:
    nodes: Nodes = await make_nodes(source={**SLOW, "transfers": {**SLOW["transfers"], "rate_limit_mib_s": 2}})
    (tmp_path / "killed").mkdir()
    daemon = Daemon(tmp_path / "killed", "lightd_" + "k" * 40, docker={"container_prefix": target_prefix},
                    transfers={"min_free_bytes": 0})
    try:
        await daemon.start()
        root = await server_on(nodes.source, "cut", random_files(16), startup_command="sleep 1000")
        assert (await nodes.source.post("/containers/cut/start"))[0] == 202
        await wait_state(nodes.source, "cut", "running")
        before = tree_digest(root)
        volume_id = (await get(nodes.source, "cut"))["volume_id"]
        status, minted = await daemon.call("POST", "/auth/tokens", json={"purpose": "transfer"})
        assert status == 201, minted
        await start(nodes.source, "cut", daemon.url, minted["token"])
        await sending(nodes, "cut", at_least=2 * 1024 * 1024)
        daemon.kill9()
        done = await ended(nodes.source, "cut")
        assert done["status"] == "failed" and "connection to the target failed" in done["error"], done
        await wait_state(nodes.source, "cut", "running")  # as it was: running
        assert tree_digest(root) == before

        await daemon.start()  # the target, back: nothing of the half-received server
        status, _ = await daemon.call("GET", "/containers/cut")
        assert status == 404
        _, volumes = await daemon.call("GET", "/volumes")
        assert volume_id not in [v["volume_id"] for v in volumes["volumes"]]
        data = tmp_path / "killed" / "data"
        assert not list((data / "transfers").iterdir())
        assert not (data / "volumes" / volume_id).exists()
    finally:
        daemon.stop()
