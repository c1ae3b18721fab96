"""The backups' own table, on the daemon's connection in the `backups` namespace: one row per backup, so a
daemon restart loses none (and finds the ones it was making)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS backups (
        id             TEXT PRIMARY KEY,
        server         TEXT NOT NULL,
        name           TEXT NOT NULL,
        adapter        TEXT NOT NULL,
        compression    TEXT NOT NULL,
        ignore         TEXT NOT NULL,
        status         TEXT NOT NULL,
        size           INTEGER,
        sha256         TEXT,
        files          INTEGER,
        skipped        INTEGER,
        error          TEXT,
        upload_id      TEXT,
        restore_status TEXT,
        restore_error  TEXT,
        restored_at    REAL,
        created_at     REAL NOT NULL,
        completed_at   REAL
    );
    CREATE INDEX IF NOT EXISTS backups_server ON backups(server, created_at);
    """,
)

FIELDS = frozenset({"status", "size", "sha256", "files", "skipped", "error", "upload_id", "restore_status",
                    "restore_error", "restored_at", "completed_at"})


class BackupStore(NamespacedStore):
    """Backup records: running, completed or failed; and how their last restore went."""

    NAMESPACE = "backups"
    MIGRATIONS = MIGRATIONS

    async def insert(self, backup_id: str, server: str, name: str, adapter: str, compression: str,
                     ignore: list[str]) -> None:
        """Record a backup that is starting (`running`)."""
        await self.ensure()
        await self.core.write(
            "INSERT INTO backups (id, server, name, adapter, compression, ignore, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
            (backup_id, server, name, adapter, compression, orjson.dumps(ignore).decode(), time.time()))

    async def update(self, backup_id: str, **fields: Any) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"not backup fields: {sorted(unknown)}")
        await self.ensure()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self.core.write(f"UPDATE backups SET {assignments} WHERE id = ?", (*fields.values(), backup_id))

    async def get(self, server: str, backup_id: str) -> dict[str, Any] | None:
        if not await self.ensure(create=False):
            return None
        row = await self.core.fetchone("SELECT * FROM backups WHERE id = ? AND server = ?", (backup_id, server))
        return _decode(row) if row else None

    async def of_server(self, server: str) -> list[dict[str, Any]]:
        """A server's backups, oldest first."""
        if not await self.ensure(create=False):
            return []
        rows = await self.core.fetchall("SELECT * FROM backups WHERE server = ? ORDER BY created_at, id", (server,))
        return [_decode(row) for row in rows]

    async def where(self, condition: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Backups matching a fixed SQL condition of this module's callers (recovery)."""
        if not await self.ensure(create=False):
            return []
        return [_decode(row) for row in await self.core.fetchall(f"SELECT * FROM backups WHERE {condition}", params)]

    async def local_bytes(self, server: str) -> int:
        """Bytes of a server's completed local backups."""
        if not await self.ensure(create=False):
            return 0
        row = await self.core.fetchone("SELECT COALESCE(SUM(size), 0) AS total FROM backups WHERE server = ?"
                                       " AND adapter = 'local' AND status = 'completed'", (server,))
        return int(row["total"]) if row else 0

    async def delete(self, backup_id: str) -> None:
        if await self.ensure(create=False):
            await self.core.write("DELETE FROM backups WHERE id = ?", (backup_id,))


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "ignore": orjson.loads(row["ignore"])}
