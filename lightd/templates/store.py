"""Templates added over the API, in their own namespace of the daemon's SQLite database (made on the first
add): one row per template, its lightd form as JSON."""

from __future__ import annotations

import time
from typing import Any

import orjson

from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS templates (
        id          TEXT PRIMARY KEY,
        body        TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    """,
)


class TemplateStore(NamespacedStore):
    NAMESPACE = "templates"
    MIGRATIONS = MIGRATIONS

    async def all(self) -> list[dict[str, Any]]:
        """Every stored template's body, oldest first."""
        if not await self.ensure(create=False):
            return []
        rows = await self.core.fetchall("SELECT body FROM templates ORDER BY created_at, id")
        return [orjson.loads(r["body"]) for r in rows]

    async def count(self) -> int:
        if not await self.ensure(create=False):
            return 0
        row = await self.core.fetchone("SELECT COUNT(*) AS n FROM templates")
        return int(row["n"]) if row else 0

    async def put(self, template_id: str, body: dict[str, Any]) -> None:
        await self.ensure()
        await self.core.write(
            "INSERT INTO templates (id, body, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            (template_id, orjson.dumps(body).decode(), time.time()))

    async def delete(self, template_id: str) -> bool:
        if not await self.ensure(create=False):
            return False
        return await self.core.write("DELETE FROM templates WHERE id = ?", (template_id,)) > 0
