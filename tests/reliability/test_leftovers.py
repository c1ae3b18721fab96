"""After kill -9 mid-install, the installer container must not go on running its script against the
volume (issue 10, item 8): the restarted daemon removes it, and every labelled container of no server."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.reliability.daemon import Daemon

pytestmark = [pytest.mark.reliability, pytest.mark.docker]

SLOW_INSTALL = "echo installing; sleep 6; echo late > /home/container/late-write"


def names_of(prefix: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=lightd.prefix={prefix}"],
                          capture_output=True, text=True).stdout.split()


async def test_kill9_mid_install_leaves_no_installer_running(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    try:
        await daemon.start()
        _, volume = await daemon.call("POST", "/volumes")
        status, body = await daemon.call("POST", "/containers", json={
            "internal_id": "slow", "image": TEST_IMAGE, "volume_id": volume["volume_id"],
            "startup_command": "sleep 100", "install_script": SLOW_INSTALL})
        assert status == 202, body
        await wait_for(lambda: f"{container_prefix}slow-installer" in names_of(container_prefix), timeout=30)
        daemon.kill9()
        # A container with our label that no server owns (a create that raced a delete, an old daemon's).
        subprocess.run(["docker", "create", "--name", f"{container_prefix}orphan", "--label", "lightd.managed=true",
                        "--label", f"lightd.prefix={container_prefix}", "--label", "lightd.internal_id=gone",
                        "--label", "lightd.role=server", TEST_IMAGE, "true"], capture_output=True, check=True)

        await daemon.start()
        remaining = names_of(container_prefix)
        assert f"{container_prefix}slow-installer" not in remaining
        assert f"{container_prefix}orphan" not in remaining
        _, view = await daemon.call("GET", "/containers/slow")
        assert view["install_state"] == "failed"
        await asyncio.sleep(8)  # past the script's sleep: had the installer lived, it would have written now
        volume_dir = tmp_path / "data" / "volumes" / volume["volume_id"]
        assert not (volume_dir / "late-write").exists()
    finally:
        daemon.stop()
