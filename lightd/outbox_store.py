"""The remote-sync outbox's queries: updates waiting for the panel, the dropped ones (the newest kept) and
the all-time dropped count. Mixed into Store, on its one connection and write lock."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import aiosqlite

    from lightd.store import Transaction

OUTBOX_DROPPED_KEEP = 10_000
"""Dropped remote-sync updates kept for inspection (newest); the all-time count is kept apart."""


class OutboxQueries:
    """The outbox, outbox_dropped, outbox_server_seq and counters tables (made by the core migrations)."""

    if TYPE_CHECKING:  # provided by Store
        db: aiosqlite.Connection

        async def fetchall(self, sql: str, params: Any = ()) -> list[dict[str, Any]]: ...
        async def fetchone(self, sql: str, params: Any = ()) -> dict[str, Any] | None: ...
        async def write(self, sql: str, params: Any = ()) -> int: ...
        def transaction(self) -> Transaction: ...

    async def enqueue_update(self, server: str, payload: dict[str, Any], max_rows: int) -> tuple[int, int]:
        """Append an update; returns (outbox seq, per-server seq). Past `max_rows` the oldest row is dropped
        into outbox_dropped with reason 'overflow'."""
        async with self.transaction():
            row = await self.fetchone(
                "INSERT INTO outbox_server_seq (server, last_seq) VALUES (?, 1)"
                " ON CONFLICT(server) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq AS s",
                (server,),
            )
            server_seq = int(row["s"])
            payload = {**payload, "seq": server_seq}
            cur = await self.db.execute(
                "INSERT INTO outbox (server, server_seq, payload, created_at) VALUES (?, ?, ?, ?)",
                (server, server_seq, orjson.dumps(payload).decode(), time.time()),
            )
            seq = cur.lastrowid
            count = (await self.fetchone("SELECT COUNT(*) AS n FROM outbox"))["n"]
            if count > max_rows:
                oldest = await self.fetchone("SELECT * FROM outbox ORDER BY seq LIMIT 1")
                await self._drop_outbox_row(oldest, "overflow")
        return int(seq), server_seq

    async def pending_updates(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self.fetchall("SELECT * FROM outbox ORDER BY seq LIMIT ?", (limit,))
        for row in rows:
            row["payload"] = orjson.loads(row["payload"])
        return rows

    async def outbox_depth(self) -> int:
        return (await self.fetchone("SELECT COUNT(*) AS n FROM outbox"))["n"]

    async def dropped_count(self) -> int:
        """Every update ever dropped (outbox_dropped keeps only the newest OUTBOX_DROPPED_KEEP of them)."""
        row = await self.fetchone("SELECT value FROM counters WHERE name = 'outbox_dropped'")
        return int(row["value"]) if row else 0

    async def list_dropped(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently dropped updates, newest first, with their reason."""
        rows = await self.fetchall("SELECT * FROM outbox_dropped ORDER BY dropped_at DESC, seq DESC LIMIT ?", (limit,))
        for row in rows:
            row["payload"] = orjson.loads(row["payload"])
        return rows

    async def ack_update(self, seq: int) -> None:
        await self.write("DELETE FROM outbox WHERE seq = ?", (seq,))

    async def bump_attempts(self, seq: int) -> None:
        await self.write("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    async def drop_update(self, seq: int, reason: str) -> None:
        async with self.transaction():
            row = await self.fetchone("SELECT * FROM outbox WHERE seq = ?", (seq,))
            if row is not None:
                await self._drop_outbox_row(row, reason)

    async def _drop_outbox_row(self, row: dict[str, Any], reason: str) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO outbox_dropped (seq, server, payload, reason, dropped_at) VALUES (?, ?, ?, ?, ?)",
            (row["seq"], row["server"], row["payload"], reason, time.time()),
        )
        await self.db.execute("DELETE FROM outbox WHERE seq = ?", (row["seq"],))
        await self.db.execute(
            "INSERT INTO counters (name, value) VALUES ('outbox_dropped', 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1"
        )
        await self.db.execute(
            "DELETE FROM outbox_dropped WHERE seq <= (SELECT seq FROM outbox_dropped ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (OUTBOX_DROPPED_KEEP,),
        )
