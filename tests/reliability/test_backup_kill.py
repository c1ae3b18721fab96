"""kill -9 of the daemon mid-backup and mid-restore (issue 14): on restart the backup is `failed` and its
temp file gone, the volume is as it was or fully restored (never half), no restore work folder is left, and
the server is not stuck in `restoring`."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.backups.helpers import read_tree, write_tree
from tests.conftest import wait_for
from tests.reliability.daemon import Daemon

pytestmark = [pytest.mark.reliability, pytest.mark.docker, pytest.mark.timeout(240)]


async def backup_status(daemon: Daemon, internal_id: str, backup_id: str) -> dict:
    status, view = await daemon.call("GET", f"/containers/{internal_id}/backups/{backup_id}")
    assert status == 200, view
    return view


async def test_kill9_mid_backup(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix},
                    backups={"write_limit_mib_s": 1})
    backups_dir = tmp_path / "data" / "backups"
    try:
        await daemon.start()
        root = await daemon.make_installed_server("killbk")
        write_tree(root, {f"d{i}/f.bin": os.urandom(1024 * 1024) for i in range(8)})
        before = read_tree(root)
        status, started = await daemon.call("POST", "/containers/killbk/backups", json={})
        assert status == 202, started
        await wait_for(lambda: list(backups_dir.glob("killbk/*.part")), timeout=20)
        await asyncio.sleep(2)  # 8 MiB at 1 MiB/s: well inside the archive
        assert list(backups_dir.glob("killbk/*.part"))
        daemon.kill9()

        await daemon.start()
        view = await backup_status(daemon, "killbk", started["backup_id"])
        assert view["status"] == "failed" and "daemon restart" in view["error"], view
        assert not list(backups_dir.rglob("*.part"))
        assert read_tree(root) == before
        # and the next one works
        status, again = await daemon.call("POST", "/containers/killbk/backups", json={})
        assert status == 202
    finally:
        daemon.stop()


async def test_kill9_mid_restore(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    restores = tmp_path / "data" / "backups" / ".restores"
    try:
        await daemon.start()
        root = await daemon.make_installed_server("killrs")
        write_tree(root, {f"dir{i // 500}/file{i}.txt": f"content {i}\n" * 20 for i in range(20_000)})
        backed_up = read_tree(root)
        status, started = await daemon.call("POST", "/containers/killrs/backups", json={})
        assert status == 202

        async def completed() -> bool:
            return (await backup_status(daemon, "killrs", started["backup_id"]))["status"] == "completed"

        await wait_for(completed, timeout=120)
        write_tree(root, {"after.txt": "written after the backup", "dir0/file0.txt": "changed"})
        (root / "dir1" / "file600.txt").unlink()
        changed = read_tree(root)

        status, body = await daemon.call("POST", f"/containers/killrs/backups/{started['backup_id']}/restore",
                                         json={"truncate": True})
        assert status == 202, body
        staged = restores / f"killrs--{started['backup_id']}" / "staged"
        await wait_for(lambda: staged.exists() and len(os.listdir(staged)) >= 3, timeout=30, interval=0.02)
        daemon.kill9()

        await daemon.start()
        after = read_tree(root)
        assert after in (changed, backed_up), "the volume is half restored"
        assert not list(restores.iterdir())
        _, server = await daemon.call("GET", "/containers/killrs")
        assert server["state"] == "offline"
        view = await backup_status(daemon, "killrs", started["backup_id"])
        assert view["restore_status"] == ("completed" if after == backed_up else "failed"), view
        assert (await daemon.call("POST", "/containers/killrs/start"))[0] == 202
    finally:
        daemon.stop()
