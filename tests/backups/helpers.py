"""Helpers for backup tests: a server with files in its volume, and waiting for a backup or restore."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from tests.conftest import Api, wait_for
from tests.servers.helpers import create_server


async def server_with_files(api: Api, internal_id: str, files: dict[str, bytes | str]) -> Path:
    """An installed (offline) server whose volume holds `files`; the volume's directory."""
    await create_server(api, internal_id)
    _, view = await api.get(f"/containers/{internal_id}")
    _, volume = await api.get(f"/volumes/{view['volume_id']}")
    root = Path(volume["path"])
    write_tree(root, files)
    return root


def write_tree(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (links not followed) by relative path."""
    found = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


async def backup(api: Api, internal_id: str, status: str = "completed", timeout: float = 60, **body: Any) -> dict[str, Any]:
    """Start a backup and wait until it ends with `status`."""
    code, started = await api.post(f"/containers/{internal_id}/backups", json=body)
    assert code == 202, started
    assert started["status"] == "running"
    return await wait_backup(api, internal_id, started["backup_id"], status, timeout)


async def wait_backup(api: Api, internal_id: str, backup_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        code, view = await api.get(f"/containers/{internal_id}/backups/{backup_id}")
        assert code == 200, view
        if view["status"] != "running":
            assert view["status"] == status, view
            return view
        return None

    return await wait_for(ended, timeout=timeout)


async def restore(api: Api, internal_id: str, backup_id: str, status: str = "completed", **body: Any) -> dict[str, Any]:
    code, answer = await api.post(f"/containers/{internal_id}/backups/{backup_id}/restore", json=body)
    assert code == 202, answer

    async def ended() -> dict[str, Any] | None:
        _, view = await api.get(f"/containers/{internal_id}/backups/{backup_id}")
        _, server = await api.get(f"/containers/{internal_id}")
        if view["restore_status"] != "running" and server["state"] == "offline":
            assert view["restore_status"] == status, view
            return view
        return None

    return await wait_for(ended, timeout=60)


def archive_names(path: Path) -> list[str]:
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name + "/" if m.isdir() else m.name) for m in tar.getmembers()] + \
               [f"@{m.type.decode()}:{m.name}" for m in tar.getmembers() if not (m.isdir() or m.isreg())]
