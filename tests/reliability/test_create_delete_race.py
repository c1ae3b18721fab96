"""Deleting a server while it installs leaves nothing in Docker (issue 11, items 2 and 3): create then
delete at random delays, 50 times, then across a daemon restart."""

from __future__ import annotations

import asyncio
import random
import subprocess

import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.reliability.daemon import Daemon

pytestmark = [pytest.mark.reliability, pytest.mark.docker]

ROUNDS = 50


def ours(prefix: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=lightd.prefix={prefix}"],
                          capture_output=True, text=True).stdout.split()


async def test_create_then_delete_at_random_delays_leaves_nothing(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    rng = random.Random(1234)
    try:
        await daemon.start()
        _, volume = await daemon.call("POST", "/volumes")
        for round_ in range(ROUNDS):
            name = f"race{round_}"
            status, body = await daemon.call("POST", "/containers", json={
                "internal_id": name, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
                "startup_command": "sleep 100", "install_script": "sleep 0.3; echo installed"})
            assert status == 202, body
            await asyncio.sleep(rng.uniform(0, 0.6))  # before, during and after docker create / the installer
            status, body = await daemon.call("DELETE", f"/containers/{name}")
            assert status == 200, (round_, body)
        assert (await daemon.call("GET", "/containers"))[1]["count"] == 0
        await wait_for(lambda: ours(container_prefix) == [], timeout=20, interval=0.5)
        assert not any((tmp_path / "data" / "servers").iterdir())  # entrypoints, scripts and logs went too
        # And nothing comes back after a restart.
        daemon.stop()
        await daemon.start()
        await asyncio.sleep(1)
        assert ours(container_prefix) == []
    finally:
        daemon.stop()
