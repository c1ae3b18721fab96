"""The Container Codes front end's own tables: its jobs, proxy upstreams and routes, the image each of its
containers was asked for, and small settings (file-area volume, proxy config). On the daemon's connection, in the `container_codes` namespace, made on
the first write; reads of a front end never used find nothing."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    # IF NOT EXISTS: a database from before namespaces got these tables from core migration 3, rows and all.
    """
    CREATE TABLE IF NOT EXISTS cc_jobs (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        status       TEXT NOT NULL,
        priority     INTEGER NOT NULL,
        request      TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        container    TEXT,
        volume_id    TEXT,
        exit_code    INTEGER,
        error        TEXT,
        logs         TEXT NOT NULL DEFAULT '[]',
        output_files TEXT NOT NULL DEFAULT '[]',
        boot         REAL NOT NULL,
        created_at   REAL NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        updated_at   REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cc_jobs_status ON cc_jobs(status, priority, created_at);
    CREATE TABLE IF NOT EXISTS cc_proxy_upstreams (
        name        TEXT PRIMARY KEY,
        config      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cc_proxy_routes (
        id          TEXT PRIMARY KEY,
        config      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cc_settings (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    );
    """,
    # The image a client asked for (`nginx:latest`), beside the one lightd runs for it (docker.image_map):
    # the core spec keeps only the second.
    """
    CREATE TABLE IF NOT EXISTS cc_asked_images (
        internal_id TEXT PRIMARY KEY,
        image       TEXT NOT NULL,
        runtime     TEXT NOT NULL
    );
    """,
)

JOB_FIELDS = frozenset({"status", "container", "volume_id", "exit_code", "error", "logs", "output_files",
                        "started_at", "finished_at", "attempts"})
PROXY_TABLES = {"upstreams": ("cc_proxy_upstreams", "name"), "routes": ("cc_proxy_routes", "id")}


class ContainerCodesStore(NamespacedStore):
    """Jobs, proxy items and settings of the Container Codes front end; one per daemon."""

    NAMESPACE = "container_codes"
    MIGRATIONS = MIGRATIONS
    LEGACY_TABLE = "cc_jobs"  # made by core migration 3 in databases from before namespaces

    # -- jobs ----------------------------------------------------------------------------------------
    async def insert_job(self, job_id: str, name: str, priority: int, request: dict[str, Any], boot: float) -> None:
        """Record a queued job."""
        await self.ensure()
        now = time.time()
        await self.core.write(
            "INSERT INTO cc_jobs (id, name, status, priority, request, boot, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
            (job_id, name, priority, orjson.dumps(request).decode(), boot, now, now),
        )

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        if not await self.ensure(create=False):
            return None
        row = await self.core.fetchone("SELECT * FROM cc_jobs WHERE id = ?", (job_id,))
        return _decode_job(row) if row else None

    async def list_jobs(self, *, status: str | None = None, created_since: float | None = None,
                        limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of jobs, newest first, and the total that match."""
        if not await self.ensure(create=False):
            return [], 0
        where, params = ["1 = 1"], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if created_since is not None:
            where.append("created_at >= ?")
            params.append(created_since)
        clause = " AND ".join(where)
        total = await self.core.fetchone(f"SELECT COUNT(*) AS n FROM cc_jobs WHERE {clause}", params)
        rows = await self.core.fetchall(
            f"SELECT * FROM cc_jobs WHERE {clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return [_decode_job(r) for r in rows], int(total["n"]) if total else 0

    async def queued_jobs(self, limit: int) -> list[str]:
        """Ids of queued jobs, highest priority first, then oldest."""
        if not await self.ensure(create=False):
            return []
        rows = await self.core.fetchall(
            "SELECT id FROM cc_jobs WHERE status = 'queued' ORDER BY priority DESC, created_at, id LIMIT ?", (limit,)
        )
        return [r["id"] for r in rows]

    async def claim_job(self, job_id: str, boot: float) -> bool:
        """Move a queued job to running for this daemon run; False when someone else took it (or it was cancelled)."""
        if not await self.ensure(create=False):
            return False
        now = time.time()
        return await self.core.write(
            "UPDATE cc_jobs SET status = 'running', boot = ?, attempts = attempts + 1, started_at = ?, error = NULL,"
            " exit_code = NULL, finished_at = NULL, updated_at = ? WHERE id = ? AND status = 'queued'",
            (boot, now, now, job_id),
        ) == 1

    async def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some of JOB_FIELDS."""
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        if not await self.ensure(create=False):
            return
        for key in ("logs", "output_files"):
            if key in fields:
                fields[key] = orjson.dumps(fields[key]).decode()
        columns = ", ".join(f"{name} = ?" for name in fields)
        await self.core.write(f"UPDATE cc_jobs SET {columns}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), job_id))

    async def finish_job(self, job_id: str, from_status: str, **fields: Any) -> bool:
        """Set a terminal status only if the job is still in `from_status` (a cancel may have won)."""
        if not await self.ensure(create=False):
            return False
        status = fields.pop("status")
        for key in ("logs", "output_files"):
            if key in fields:
                fields[key] = orjson.dumps(fields[key]).decode()
        columns = "".join(f", {name} = ?" for name in fields)
        return await self.core.write(
            f"UPDATE cc_jobs SET status = ?{columns}, updated_at = ? WHERE id = ? AND status = ?",
            (status, *fields.values(), time.time(), job_id, from_status),
        ) == 1

    async def cancel_queued_job(self, job_id: str) -> bool:
        """A queued job becomes cancelled; False when it is not queued."""
        if not await self.ensure(create=False):
            return False
        now = time.time()
        return await self.core.write(
            "UPDATE cc_jobs SET status = 'cancelled', finished_at = ?, updated_at = ? WHERE id = ? AND status = 'queued'",
            (now, now, job_id),
        ) == 1

    async def requeue_job(self, job_id: str) -> bool:
        """A failed or cancelled job back to queued (retry)."""
        if not await self.ensure(create=False):
            return False
        return await self.core.write(
            "UPDATE cc_jobs SET status = 'queued', error = NULL, exit_code = NULL, finished_at = NULL, updated_at = ?"
            " WHERE id = ? AND status IN ('failed', 'cancelled')",
            (time.time(), job_id),
        ) == 1

    async def fail_interrupted_jobs(self, boot: float, error: str) -> list[dict[str, Any]]:
        """Jobs that were running in an earlier daemon run become failed; returns them (as they were)."""
        if not await self.ensure(create=False):
            return []
        async with self.core.transaction():
            rows = await self.core.fetchall("SELECT * FROM cc_jobs WHERE status = 'running' AND boot < ?", (boot,))
            now = time.time()
            await self.core.db.execute(
                "UPDATE cc_jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ?"
                " WHERE status = 'running' AND boot < ?",
                (error, now, now, boot),
            )
        return [_decode_job(r) for r in rows]

    # -- proxy upstreams and routes ------------------------------------------------------------------
    async def put_proxy_item(self, table: str, key: str, config: dict[str, Any], *, create: bool) -> bool:
        """Insert (create) or replace an existing upstream/route; False on a duplicate create or a missing update."""
        sql_table, column = PROXY_TABLES[table]
        if not await self.ensure(create=create):
            return False
        text = orjson.dumps(config).decode()
        if create:
            return await self.core.write(
                f"INSERT OR IGNORE INTO {sql_table} ({column}, config, created_at) VALUES (?, ?, ?)", (key, text, time.time())
            ) == 1
        return await self.core.write(f"UPDATE {sql_table} SET config = ? WHERE {column} = ?", (text, key)) == 1

    async def list_proxy_items(self, table: str) -> list[dict[str, Any]]:
        sql_table, _ = PROXY_TABLES[table]
        if not await self.ensure(create=False):
            return []
        rows = await self.core.fetchall(f"SELECT config FROM {sql_table} ORDER BY created_at, rowid")
        return [orjson.loads(r["config"]) for r in rows]

    async def delete_proxy_item(self, table: str, key: str) -> bool:
        sql_table, column = PROXY_TABLES[table]
        if not await self.ensure(create=False):
            return False
        return await self.core.write(f"DELETE FROM {sql_table} WHERE {column} = ?", (key,)) == 1

    # -- asked images --------------------------------------------------------------------------------
    async def remember_image(self, internal_id: str, image: str, runtime: str) -> None:
        """The container was asked for `image` and runs `runtime`."""
        await self.ensure()
        await self.core.write("INSERT OR REPLACE INTO cc_asked_images (internal_id, image, runtime) VALUES (?, ?, ?)",
                              (internal_id, image, runtime))

    async def forget_image(self, internal_id: str) -> None:
        if await self.ensure(create=False):
            await self.core.write("DELETE FROM cc_asked_images WHERE internal_id = ?", (internal_id,))

    async def asked_images(self) -> dict[str, tuple[str, str]]:
        """internal id -> (the image asked for, the image it was mapped to)."""
        if not await self.ensure(create=False):
            return {}
        rows = await self.core.fetchall("SELECT internal_id, image, runtime FROM cc_asked_images")
        return {r["internal_id"]: (r["image"], r["runtime"]) for r in rows}

    # -- settings ------------------------------------------------------------------------------------
    async def get_setting(self, key: str) -> Any:
        if not await self.ensure(create=False):
            return None
        row = await self.core.fetchone("SELECT value FROM cc_settings WHERE key = ?", (key,))
        return orjson.loads(row["value"]) if row else None

    async def set_setting(self, key: str, value: Any) -> None:
        await self.ensure()
        await self.core.write("INSERT OR REPLACE INTO cc_settings (key, value) VALUES (?, ?)", (key, orjson.dumps(value).decode()))


def _decode_job(row: dict[str, Any]) -> dict[str, Any]:
    row["request"] = orjson.loads(row["request"])
    row["logs"] = orjson.loads(row["logs"])
    row["output_files"] = orjson.loads(row["output_files"])
    return row


STORE = web.AppKey("container_codes_store", ContainerCodesStore)
"""On the main application (shared by the mounted and the own-port app) or, when nothing is mounted, on the one app."""
