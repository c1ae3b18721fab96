"""A whole move between two nodes against the real engine: the volume's tree arrives byte for byte (sha256 of
every file on both sides), the server is ready and not started on the target with its ports, spec and
install log, and the source's copy is gone; events on the way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightd import keys
from tests.conftest import TEST_IMAGE, wait_for
from tests.servers.helpers import EventLog, get, wait_state
from tests.transfers.conftest import Nodes
from tests.transfers.helpers import add_port, ended, sample_files, server_on, start, transfer_token, tree_digest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def test_full_move(nodes: Nodes) -> None:
    port = 25_000 + (hash(nodes.target_url) % 5000)
    await add_port(nodes.source, port)
    await add_port(nodes.target, port)
    root = await server_on(nodes.source, "mover", sample_files(), install_script="echo installed-here",
                           ports=[{"ip": "127.0.0.1", "port": port}], startup_command="sleep 1000")
    status, _ = await nodes.source.post("/containers/mover/start")
    assert status == 202
    await wait_state(nodes.source, "mover", "running")
    before = tree_digest(root)
    spec_before = await get(nodes.source, "mover")
    events = EventLog(nodes.source_client.app, "mover")
    token = await transfer_token(nodes.target)

    view = await start(nodes.source, "mover", nodes.target_url, token)
    done = await ended(nodes.source, "mover")
    assert done["status"] == "completed", done
    assert done["transfer_id"] == view["transfer_id"] and done["sha256"]

    # the source's copy is gone (deleted right after `transfer_completed`): server, container, volume, port
    await wait_for(lambda: not root.exists(), timeout=30)
    status, _ = await nodes.source.get("/containers/mover")
    assert status == 404
    status, ports = await nodes.source.get("/network/ports")
    assert not any(p["in_use"] for p in ports["ports"]), ports
    types = events.types()
    for kind in ("transfer_started", "transfer_progress", "stopping", "offline", "transferring", "transfer_completed", "deleted"):
        assert kind in types, (kind, types)
    assert types.index("transfer_completed") < types.index("deleted")

    # the target has it whole: ready, not started, same id, spec, ports and files
    moved = await get(nodes.target, "mover")
    assert moved["install_state"] == "ready" and moved["state"] == "offline", moved
    for field in ("volume_id", "image", "startup_command", "ports", "limits", "stop"):
        assert moved[field] == spec_before[field], field
    _, volume = await nodes.target.get(f"/volumes/{moved['volume_id']}")
    assert tree_digest(Path(volume["path"])) == before
    status, log = await nodes.target.get("/containers/mover/install-log")
    assert status == 200 and b"installed-here" in log
    status, ports = await nodes.target.get("/network/ports")
    assert [p["container"] for p in ports["ports"] if p["in_use"]] == ["mover"]
    assert not list((nodes.target_client.app[keys.CONFIG].transfers_dir).iterdir())
    # and it runs there, under the target's container prefix
    status, _ = await nodes.target.post("/containers/mover/start")
    assert status == 202
    running = await wait_state(nodes.target, "mover", "running")
    assert running["name"].startswith(nodes.target_client.app[keys.CONFIG].docker.container_prefix)


async def test_the_token_is_checked_on_the_target(nodes: Nodes) -> None:
    await server_on(nodes.source, "guarded", {"a.txt": "a"})

    async def refused(token: str, needle: str) -> None:
        await start(nodes.source, "guarded", nodes.target_url, token)
        done = await ended(nodes.source, "guarded")
        assert done["status"] == "failed" and needle in done["error"], done
        assert (await get(nodes.source, "guarded"))["state"] == "offline"

    status, everything = await nodes.target.post("/auth/tokens", json={"purpose": "all"})
    await refused(everything["token"], "(403)")  # wrong purpose: an `all` token does not open transfers
    status, socket = await nodes.target.post("/auth/tokens", json={"purpose": "websocket"})
    await refused(socket["token"], "(403)")
    await refused("lightd_" + "x" * 40, "(401)")  # not a token of the target's
    short = await transfer_token(nodes.target, ttl_seconds=1)
    await asyncio.sleep(1.5)
    await refused(short, "expired")
    # the source's node token does not open the target either
    await refused(nodes.source.headers["Authorization"].split()[1], "(401)")
    # a transfer token is neither scoped nor single use
    for body in ({"container": "guarded"}, {"remove_on_use": True}):
        status, answer = await nodes.target.post("/auth/tokens", json={"purpose": "transfer", **body})
        assert status in (400, 404), answer
    # only the node token starts a transfer on the source
    _, scoped = await nodes.source.post("/auth/tokens", json={"purpose": "api", "container": "guarded"})
    status, answer = await nodes.source.call("POST", "/containers/guarded/transfer", headers={
        "Authorization": f"Bearer {scoped['token']}"}, json={"target_url": nodes.target_url, "target_token": "lightd_" + "y" * 40})
    assert status == 403, answer
    status, listed = await nodes.target.get("/containers")
    assert listed["total"] == 0


async def test_target_out_of_ports_refuses_and_creates_nothing(nodes: Nodes) -> None:
    await add_port(nodes.source, 26_001)
    await add_port(nodes.source, 26_002)
    await add_port(nodes.target, 26_001)
    await nodes.target.post("/containers", json={"internal_id": "holder", "image": TEST_IMAGE, "startup_command": "sleep 1",
                                                 "volume_id": (await nodes.target.post("/volumes"))[1]["volume_id"],
                                                 "ports": [{"ip": "127.0.0.1", "port": 26_001}]})
    root = await server_on(nodes.source, "porty", {"keep.txt": "kept"},
                           ports=[{"ip": "127.0.0.1", "port": 26_001}, {"ip": "127.0.0.1", "port": 26_002}])
    before = tree_digest(root)
    await start(nodes.source, "porty", nodes.target_url, await transfer_token(nodes.target))
    done = await ended(nodes.source, "porty")
    assert done["status"] == "failed", done
    assert "127.0.0.1:26001/tcp (in use by holder)" in done["error"], done
    assert "127.0.0.1:26002/tcp (not in the port pool)" in done["error"], done
    kept = await get(nodes.source, "porty")
    assert kept["state"] == "offline" and kept["install_state"] == "ready"
    assert tree_digest(root) == before
    status, _ = await nodes.target.get("/containers/porty")
    assert status == 404
    _, volumes = await nodes.target.get("/volumes")
    assert kept["volume_id"] not in [v["volume_id"] for v in volumes["volumes"]]
    # the same server moves once the target has the ports
    await nodes.target.delete("/containers/holder")
    await add_port(nodes.target, 26_002)
    await start(nodes.source, "porty", nodes.target_url, await transfer_token(nodes.target))
    assert (await ended(nodes.source, "porty"))["status"] == "completed"
    await wait_for(lambda: nodes.target.get("/containers/porty"), timeout=5)


async def test_servers_whose_volumes_are_shared_or_mounted_are_refused_up_front(nodes: Nodes) -> None:
    """Only a server's own volume moves: a server that mounts another volume (it could not start on the
    target), one whose volume another server mounts and one whose volume another server runs on are refused
    with 409 not_movable before anything stops or moves."""
    shared = (await nodes.source.post("/volumes"))[1]["volume_id"]
    await server_on(nodes.source, "mounter", {"a.txt": "a"}, volume_mounts=[{"volume_id": shared, "target": "/mnt/shared"}])
    await server_on(nodes.source, "owner", {"b.txt": "b"}, volume_id=shared)
    lender = await server_on(nodes.source, "lender", {"c.txt": "c"})
    _, lender_view = await nodes.source.get("/containers/lender")
    await server_on(nodes.source, "twin", {}, volume_id=lender_view["volume_id"])
    await nodes.source.post("/containers/mounter/start")
    await wait_state(nodes.source, "mounter", "running")
    token = await transfer_token(nodes.target)
    before = tree_digest(lender)
    for internal_id, names in (("mounter", shared), ("owner", "mounter"), ("lender", "twin"), ("twin", "lender")):
        status, answer = await nodes.source.post(f"/containers/{internal_id}/transfer",
                                                 json={"target_url": nodes.target_url, "target_token": token})
        assert status == 409 and answer["code"] == "not_movable", (internal_id, answer)
        assert names in answer["error"], answer
        status, view = await nodes.source.get(f"/containers/{internal_id}/transfer")
        assert status == 404, view  # no transfer was recorded
    assert (await get(nodes.source, "mounter"))["state"] == "running"  # nothing was stopped
    assert tree_digest(lender) == before
    status, listed = await nodes.target.get("/containers")
    assert listed["total"] == 0
    # detached, the server moves
    status, _ = await nodes.source.post("/containers/mounter/stop")
    await wait_state(nodes.source, "mounter", "offline")
    status, answer = await nodes.source.call("PATCH", "/containers/mounter", json={"volume_mounts": []})
    assert status == 200, answer
    await start(nodes.source, "mounter", nodes.target_url, token)
    assert (await ended(nodes.source, "mounter"))["status"] == "completed"
