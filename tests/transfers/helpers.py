"""Two nodes for transfer tests: a server with files on the source, a transfer token minted on the target,
waiting for a transfer's end, and the sha256 of a volume's tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tests.conftest import Api, wait_for
from tests.backups.helpers import write_tree
from tests.servers.helpers import create_server


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every regular file under `root` by relative path (folders listed as such)."""
    found: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            found[str((Path(folder) / name).relative_to(root)) + "/"] = "dir"
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def sample_files(megabytes: int = 3) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {f"world/region/r.{i}.mca": os.urandom(1024 * 1024) for i in range(megabytes)}
    files.update({f"plugins/p{i}/config.yml": f"value: {i}\n" * 50 for i in range(40)})
    files["server.properties"] = "server-port=25565\nmotd=moved\n"
    files["empty.txt"] = b""
    return files


async def server_on(api: Api, internal_id: str, files: dict[str, bytes | str], **fields: Any) -> Path:
    await create_server(api, internal_id, **fields)
    _, view = await api.get(f"/containers/{internal_id}")
    _, volume = await api.get(f"/volumes/{view['volume_id']}")
    root = Path(volume["path"])
    write_tree(root, files)
    return root


async def transfer_token(target: Api, **body: Any) -> str:
    status, minted = await target.post("/auth/tokens", json={"purpose": "transfer", **body})
    assert status == 201, minted
    return minted["token"]


async def start(source: Api, internal_id: str, target_url: str, token: str) -> dict[str, Any]:
    status, view = await source.post(f"/containers/{internal_id}/transfer",
                                     json={"target_url": target_url, "target_token": token})
    assert status == 202, view
    assert view["status"] == "running"
    return view


async def ended(source: Api, internal_id: str, timeout: float = 90) -> dict[str, Any]:
    """The transfer's view once it is no longer running."""
    async def done() -> dict[str, Any] | None:
        status, view = await source.get(f"/containers/{internal_id}/transfer")
        assert status == 200, view
        return view if view["status"] != "running" else None

    return await wait_for(done, timeout=timeout)


async def add_port(api: Api, port: int) -> None:
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": port, "protocol": "tcp"})
    assert status in (200, 201), body
