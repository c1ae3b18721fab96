"""The ProxiCloud front end's own tables: integer vmids for lightd containers (never reused: a deleted
container's row is kept, retired), the analytics samples (30 days, pruned by the collector) and the activity
log. On the daemon's connection, in the `proxicloud` namespace, made on the first write; reads of a front
end never used find nothing."""

from __future__ import annotations

import time
from typing import Any

import orjson

from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    # IF NOT EXISTS: a database from before namespaces got these tables from core migration 4, rows and all.
    """
    CREATE TABLE IF NOT EXISTS proxicloud_vmids (
        vmid        INTEGER PRIMARY KEY,
        server      TEXT NOT NULL,
        options     TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        retired_at  REAL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS proxicloud_vmids_live ON proxicloud_vmids(server) WHERE retired_at IS NULL;
    CREATE TABLE IF NOT EXISTS proxicloud_samples (
        vmid          INTEGER NOT NULL,
        ts            REAL NOT NULL,
        cpu           REAL NOT NULL,
        memory        INTEGER NOT NULL,
        memory_total  INTEGER NOT NULL,
        net_in        INTEGER NOT NULL,
        net_out       INTEGER NOT NULL,
        disk          INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proxicloud_samples_vmid ON proxicloud_samples(vmid, ts);
    CREATE INDEX IF NOT EXISTS proxicloud_samples_ts ON proxicloud_samples(ts);
    CREATE TABLE IF NOT EXISTS proxicloud_activity (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        ts          REAL NOT NULL,
        action      TEXT NOT NULL,
        vmid        INTEGER,
        name        TEXT NOT NULL,
        details     TEXT
    );
    """,
)


class ProxiCloudStore(NamespacedStore):
    """vmids, analytics samples and activity of the ProxiCloud front end; one per daemon (its node's)."""

    NAMESPACE = "proxicloud"
    MIGRATIONS = MIGRATIONS
    LEGACY_TABLE = "proxicloud_vmids"  # made by core migration 4 in databases from before namespaces

    # -- vmids ---------------------------------------------------------------------------------------
    async def vmids(self) -> list[dict[str, Any]]:
        """The live vmid rows (options decoded), lowest vmid first."""
        if not await self.ensure(create=False):
            return []
        rows = await self.core.fetchall("SELECT * FROM proxicloud_vmids WHERE retired_at IS NULL ORDER BY vmid")
        for row in rows:
            row["options"] = orjson.loads(row["options"])
        return rows

    async def assign_vmid(self, server: str, options: dict[str, Any], first: int) -> tuple[int, bool]:
        """The live vmid of `server`, allocated (one above any vmid ever given, at least `first`) when it
        has none; (vmid, True when allocated now)."""
        await self.ensure()
        core = self.core
        async with core.transaction():
            row = await core.fetchone(
                "SELECT vmid FROM proxicloud_vmids WHERE server = ? AND retired_at IS NULL", (server,)
            )
            if row is not None:
                return int(row["vmid"]), False
            row = await core.fetchone(
                "INSERT INTO proxicloud_vmids (vmid, server, options, created_at)"
                " SELECT MAX(COALESCE(MAX(vmid) + 1, ?), ?), ?, ?, ? FROM proxicloud_vmids RETURNING vmid",
                (first, first, server, orjson.dumps(options).decode(), time.time()),
            )
        return int(row["vmid"]), True

    async def assign_vmid_in(self, server: str, options: dict[str, Any], low: int, high: int) -> int | None:
        """A new live vmid for `server`: the lowest in [low, high] never given before (live or retired);
        None when every one of them has been."""
        await self.ensure()
        core = self.core
        async with core.transaction():
            taken = {int(r["vmid"]) for r in await core.fetchall(
                "SELECT vmid FROM proxicloud_vmids WHERE vmid BETWEEN ? AND ?", (low, high))}
            vmid = next((v for v in range(low, high + 1) if v not in taken), None)
            if vmid is not None:
                await core.db.execute(
                    "INSERT INTO proxicloud_vmids (vmid, server, options, created_at) VALUES (?, ?, ?, ?)",
                    (vmid, server, orjson.dumps(options).decode(), time.time()))
        return vmid

    async def retire_vmid(self, server: str) -> int | None:
        """Retire the live vmid of `server` (kept, never given again) and drop its samples; the vmid."""
        if not await self.ensure(create=False):
            return None
        core = self.core
        async with core.transaction():
            row = await core.fetchone(
                "UPDATE proxicloud_vmids SET retired_at = ? WHERE server = ? AND retired_at IS NULL RETURNING vmid",
                (time.time(), server),
            )
            if row is None:
                return None
            await core.db.execute("DELETE FROM proxicloud_samples WHERE vmid = ?", (row["vmid"],))
        return int(row["vmid"])

    # -- analytics samples ---------------------------------------------------------------------------
    async def add_samples(self, rows: list[tuple[int, float, float, int, int, int, int, int]]) -> None:
        """Append (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk) rows."""
        if not rows:
            return
        await self.ensure()
        core = self.core
        async with core.transaction():
            await core.db.executemany(
                "INSERT INTO proxicloud_samples (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def has_samples(self) -> bool:
        if not await self.ensure(create=False):
            return False
        return await self.core.fetchone("SELECT 1 AS one FROM proxicloud_samples LIMIT 1") is not None

    async def compact_samples(self, before: float, bucket: float) -> int:
        """Samples older than `before` become one row per vmid and `bucket` seconds (averages; network
        summed; memory total and disk the largest); returns the rows removed. Buckets already down to one
        row are left as they are."""
        if not await self.ensure(create=False):
            return 0
        group = "vmid, CAST(ts / :bucket AS INTEGER)"
        params = {"before": before, "bucket": bucket}
        core = self.core
        async with core.transaction():
            last = (await core.fetchone("SELECT COALESCE(MAX(rowid), 0) AS n FROM proxicloud_samples"))["n"]
            await core.db.execute(
                "INSERT INTO proxicloud_samples (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk)"
                " SELECT vmid, MIN(ts), AVG(cpu), CAST(AVG(memory) AS INTEGER), MAX(memory_total), SUM(net_in),"
                f" SUM(net_out), MAX(disk) FROM proxicloud_samples WHERE ts < :before GROUP BY {group}"
                " HAVING COUNT(*) > 1",
                params,
            )
            cur = await core.db.execute(
                f"DELETE FROM proxicloud_samples WHERE rowid <= :last AND ts < :before AND ({group}) IN"
                f" (SELECT {group} FROM proxicloud_samples WHERE rowid > :last)",
                {**params, "last": last},
            )
            return cur.rowcount

    async def prune_samples(self, before: float) -> int:
        """Remove the samples older than `before`; how many."""
        if not await self.ensure(create=False):
            return 0
        return await self.core.write("DELETE FROM proxicloud_samples WHERE ts < ?", (before,))

    async def series(self, vmid: int, since: float, bucket: float) -> list[dict[str, Any]]:
        """Samples of `vmid` since `since`, one row per `bucket` seconds: averages, extremes and sums."""
        if not await self.ensure(create=False):
            return []
        return await self.core.fetchall(
            "SELECT CAST(ts / ? AS INTEGER) * ? AS ts, AVG(cpu) AS cpu, MIN(cpu) AS cpu_min, MAX(cpu) AS cpu_max,"
            " AVG(memory) AS memory, MAX(memory_total) AS memory_total, SUM(net_in) AS net_in,"
            " SUM(net_out) AS net_out, MAX(disk) AS disk, COUNT(*) AS samples"
            " FROM proxicloud_samples WHERE vmid = ? AND ts >= ? GROUP BY CAST(ts / ? AS INTEGER) ORDER BY 1",
            (bucket, bucket, vmid, since, bucket),
        )

    # -- activity ------------------------------------------------------------------------------------
    async def add_activity(self, action: str, vmid: int | None, name: str, details: str | None, keep: int) -> None:
        """Append one activity entry; only the newest `keep` entries are kept."""
        await self.ensure()
        core = self.core
        async with core.transaction():
            cur = await core.db.execute(
                "INSERT INTO proxicloud_activity (ts, action, vmid, name, details) VALUES (?, ?, ?, ?, ?)",
                (time.time(), action, vmid, name, details),
            )
            await core.db.execute("DELETE FROM proxicloud_activity WHERE id <= ?", (cur.lastrowid - keep,))

    async def activity(self, limit: int) -> list[dict[str, Any]]:
        """The newest activity entries, newest first."""
        if not await self.ensure(create=False):
            return []
        return await self.core.fetchall("SELECT * FROM proxicloud_activity ORDER BY id DESC LIMIT ?", (limit,))
