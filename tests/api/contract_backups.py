"""The contract test's calls of the backup routes (tests/api/test_openapi_contract.py) not made by the signed
download: list, restore (waited for), delete."""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_for

BACKUPS = "/containers/{container_id}/backups"


async def backups_contract(c: Any, internal_id: str) -> None:
    """Restore the offline server's newest backup, then delete it."""
    listed = await c.call("GET", BACKUPS, 200, container_id=internal_id)
    backup_id = listed["backups"][-1]["backup_id"]
    await c.call("POST", BACKUPS + "/{backup_id}/restore", 202, json_body={"truncate": False},
                 container_id=internal_id, backup_id=backup_id)

    async def restored() -> bool:
        view = await c.call("GET", BACKUPS + "/{backup_id}", 200, container_id=internal_id, backup_id=backup_id)
        return view["restore_status"] == "completed"

    await wait_for(restored, timeout=60)
    await c.state(internal_id, "state", "offline")
    await c.call("DELETE", BACKUPS + "/{backup_id}", 200, container_id=internal_id, backup_id=backup_id)
