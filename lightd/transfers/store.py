"""The transfers' own table, on the daemon's connection in the `transfers` namespace: one row per transfer
(sent or received), so a daemon restart finds the ones it was running and settles them."""

from __future__ import annotations

import time
from typing import Any

from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS transfers (
        id         TEXT PRIMARY KEY,
        server     TEXT NOT NULL,
        direction  TEXT NOT NULL,
        peer       TEXT NOT NULL,
        volume_id  TEXT NOT NULL,
        status     TEXT NOT NULL,
        error      TEXT,
        bytes      INTEGER,
        sha256     TEXT,
        created_at REAL NOT NULL,
        ended_at   REAL
    );
    CREATE INDEX IF NOT EXISTS transfers_server ON transfers(server, created_at);
    """,
)

FIELDS = frozenset({"status", "error", "bytes", "sha256", "ended_at"})


class TransferStore(NamespacedStore):
    """Transfer records: `running`, then `completed`, `failed` or `cancelled`."""

    NAMESPACE = "transfers"
    MIGRATIONS = MIGRATIONS

    async def insert(self, transfer_id: str, server: str, direction: str, peer: str, volume_id: str) -> None:
        """Record a transfer that is starting (`running`); `direction` is `out` (source) or `in` (target)."""
        await self.ensure()
        await self.core.write(
            "INSERT INTO transfers (id, server, direction, peer, volume_id, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'running', ?)", (transfer_id, server, direction, peer, volume_id, time.time()))

    async def end(self, transfer_id: str, status: str, **fields: Any) -> None:
        """Record how it ended."""
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"not transfer fields: {sorted(unknown)}")
        await self.ensure()
        fields.update(status=status, ended_at=time.time())
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self.core.write(f"UPDATE transfers SET {assignments} WHERE id = ?", (*fields.values(), transfer_id))

    async def get(self, transfer_id: str) -> dict[str, Any] | None:
        if not await self.ensure(create=False):
            return None
        return await self.core.fetchone("SELECT * FROM transfers WHERE id = ?", (transfer_id,))

    async def latest_out(self, server: str) -> dict[str, Any] | None:
        """The server's last transfer from this node."""
        if not await self.ensure(create=False):
            return None
        return await self.core.fetchone("SELECT * FROM transfers WHERE server = ? AND direction = 'out'"
                                        " ORDER BY created_at DESC LIMIT 1", (server,))

    async def running(self, direction: str) -> list[dict[str, Any]]:
        """Transfers recorded `running` in one direction (what a dead daemon left)."""
        if not await self.ensure(create=False):
            return []
        return await self.core.fetchall("SELECT * FROM transfers WHERE status = 'running' AND direction = ?",
                                        (direction,))
