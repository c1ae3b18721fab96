"""kill -9 of the source daemon mid-transfer (issue 15), with two real daemon processes on one machine
against the same engine: after its restart the server is intact on the source (its files, `offline`, not
`transferring`, the transfer `failed`), and nothing of it is on the target (no server, volume or work folder),
and the same server then moves whole."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.conftest import remove_containers, wait_for
from tests.backups.helpers import write_tree
from tests.reliability.daemon import Daemon
from tests.transfers.helpers import tree_digest

pytestmark = [pytest.mark.reliability, pytest.mark.docker, pytest.mark.timeout(240)]


async def test_kill9_source_mid_transfer(tmp_path: Path, container_prefix: str) -> None:
    target_prefix = f"lightdtest-{secrets.token_hex(3)}-"
    for name in ("source", "target"):
        (tmp_path / name).mkdir()
    source = Daemon(tmp_path / "source", "lightd_" + "s" * 40, docker={"container_prefix": container_prefix},
                    transfers={"rate_limit_mib_s": 2, "stop_timeout_seconds": 3})
    target = Daemon(tmp_path / "target", "lightd_" + "t" * 40, docker={"container_prefix": target_prefix},
                    transfers={"min_free_bytes": 0})
    try:
        await source.start()
        await target.start()
        root = await source.make_installed_server("moving")
        write_tree(root, {f"world/r{i}.bin": os.urandom(1024 * 1024) for i in range(16)} | {"a.txt": "a"})
        before = tree_digest(root)
        volume_id = root.name
        status, minted = await target.call("POST", "/auth/tokens", json={"purpose": "transfer"})
        assert status == 201, minted
        body = {"target_url": target.url, "target_token": minted["token"]}
        status, started = await source.call("POST", "/containers/moving/transfer", json=body)
        assert status == 202, started

        async def mid_stream() -> bool:
            view = (await source.call("GET", "/containers/moving/transfer"))[1]
            return view["phase"] == "sending" and view["bytes_sent"] >= 3 * 1024 * 1024
        await wait_for(mid_stream, timeout=30, interval=0.05)
        status, incoming = await target.call("GET", "/transfers")
        assert [t["status"] for t in incoming["transfers"]] == ["receiving"], incoming
        source.kill9()

        # the target drops the half-received server once the stream is cut
        async def target_clean() -> bool:
            return (await target.call("GET", "/transfers"))[1]["count"] == 0
        await wait_for(target_clean, timeout=30)
        assert (await target.call("GET", "/containers/moving"))[0] == 404
        assert volume_id not in [v["volume_id"] for v in (await target.call("GET", "/volumes"))[1]["volumes"]]
        assert not list((tmp_path / "target" / "data" / "transfers").iterdir())
        assert not (tmp_path / "target" / "data" / "volumes" / volume_id).exists()

        # the source after its restart: the server as it was, the transfer failed
        await source.start()
        status, server = await source.call("GET", "/containers/moving")
        assert status == 200 and server["state"] == "offline" and server["install_state"] == "ready", server
        status, view = await source.call("GET", "/containers/moving/transfer")
        assert view["status"] == "failed" and "daemon restart" in view["error"], view
        assert tree_digest(root) == before
        status, answer = await source.call("POST", "/containers/moving/start")
        assert status == 202, answer  # power actions work again

        async def running() -> bool:
            return (await source.call("GET", "/containers/moving"))[1]["state"] == "running"
        await wait_for(running, timeout=30)
        # and the next transfer moves it whole
        status, started = await source.call("POST", "/containers/moving/transfer", json=body)
        assert status == 202, started

        async def moved() -> bool:
            view = (await source.call("GET", "/containers/moving/transfer"))[1]
            assert view["status"] in ("running", "completed"), view
            return view["status"] == "completed"
        await wait_for(moved, timeout=60)

        async def source_copy_gone() -> bool:
            return (await source.call("GET", "/containers/moving"))[0] == 404
        await wait_for(source_copy_gone, timeout=30)
        status, arrived = await target.call("GET", "/containers/moving")
        assert status == 200 and arrived["install_state"] == "ready" and arrived["state"] == "offline", arrived
        assert tree_digest(tmp_path / "target" / "data" / "volumes" / volume_id) == before
    finally:
        source.stop()
        target.stop()
        remove_containers(target_prefix)
