"""SQLite persistence through aiosqlite: schema, forward migrations and every query. The only SQL in lightd.

One connection in WAL mode; aiosqlite runs each call on its own worker thread so the event loop never
blocks on the disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

OUTBOX_DROPPED_KEEP = 10_000
"""Dropped remote-sync updates kept for inspection (newest); the all-time count is kept apart."""

# Each entry migrates the schema from version i to i + 1. Append only; never edit a released step.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE volumes (
        id          TEXT PRIMARY KEY,
        path        TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE ports (
        ip          TEXT NOT NULL,
        port        INTEGER NOT NULL,
        protocol    TEXT NOT NULL,
        in_use      INTEGER NOT NULL DEFAULT 0,
        container   TEXT,
        created_at  REAL NOT NULL,
        PRIMARY KEY (ip, port, protocol)
    );
    CREATE TABLE containers (
        internal_id    TEXT PRIMARY KEY,
        volume_id      TEXT NOT NULL,
        spec           TEXT NOT NULL,
        install_state  TEXT NOT NULL,
        install_error  TEXT,
        state          TEXT NOT NULL DEFAULT 'offline',
        exit_code      INTEGER,
        oom_killed     INTEGER NOT NULL DEFAULT 0,
        docker_id      TEXT,
        last_crash_at  REAL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL
    );
    CREATE INDEX containers_volume ON containers(volume_id);
    CREATE TABLE tokens (
        hash        TEXT PRIMARY KEY,
        container   TEXT,
        purpose     TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    );
    CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        server      TEXT NOT NULL,
        server_seq  INTEGER NOT NULL,
        payload     TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL
    );
    CREATE INDEX outbox_server ON outbox(server, seq);
    CREATE TABLE outbox_dropped (
        seq         INTEGER PRIMARY KEY,
        server      TEXT NOT NULL,
        payload     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        dropped_at  REAL NOT NULL
    );
    """,
    # Per-server seq counter: MAX(server_seq) over the outbox fell back once acknowledged rows were deleted.
    """
    CREATE TABLE outbox_server_seq (
        server      TEXT PRIMARY KEY,
        last_seq    INTEGER NOT NULL
    );
    INSERT INTO outbox_server_seq (server, last_seq)
        SELECT server, MAX(s) FROM (
            SELECT server, server_seq AS s FROM outbox
            UNION ALL SELECT server, json_extract(payload, '$.seq') FROM outbox_dropped
        ) GROUP BY server;
    """,
    # Container Codes front end: its jobs, proxy upstreams and routes, and small settings (file-area volume,
    # proxy config).
    """
    CREATE TABLE cc_jobs (
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
    CREATE INDEX cc_jobs_status ON cc_jobs(status, priority, created_at);
    CREATE TABLE cc_proxy_upstreams (
        name        TEXT PRIMARY KEY,
        config      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE cc_proxy_routes (
        id          TEXT PRIMARY KEY,
        config      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE cc_settings (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    );
    """,
    # ProxiCloud front end: integer vmids for lightd containers (never reused: a deleted container's row is
    # kept, retired), the analytics samples (30 days, pruned by the collector) and the activity log.
    """
    CREATE TABLE proxicloud_vmids (
        vmid        INTEGER PRIMARY KEY,
        server      TEXT NOT NULL,
        options     TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        retired_at  REAL
    );
    CREATE UNIQUE INDEX proxicloud_vmids_live ON proxicloud_vmids(server) WHERE retired_at IS NULL;
    CREATE TABLE proxicloud_samples (
        vmid          INTEGER NOT NULL,
        ts            REAL NOT NULL,
        cpu           REAL NOT NULL,
        memory        INTEGER NOT NULL,
        memory_total  INTEGER NOT NULL,
        net_in        INTEGER NOT NULL,
        net_out       INTEGER NOT NULL,
        disk          INTEGER NOT NULL
    );
    CREATE INDEX proxicloud_samples_vmid ON proxicloud_samples(vmid, ts);
    CREATE INDEX proxicloud_samples_ts ON proxicloud_samples(ts);
    CREATE TABLE proxicloud_activity (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        ts          REAL NOT NULL,
        action      TEXT NOT NULL,
        vmid        INTEGER,
        name        TEXT NOT NULL,
        details     TEXT
    );
    """,    # Named counters; the first counts every remote-sync update ever dropped, so that outbox_dropped can keep
    # only the newest rows (it grew without bound while a panel refused updates).
    """
    CREATE TABLE counters (
        name        TEXT PRIMARY KEY,
        value       INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) SELECT 'outbox_dropped', COUNT(*) FROM outbox_dropped;
    """,
    # Temporary tokens get a public id, by which they are listed and revoked; the hash is never shown.
    """
    ALTER TABLE tokens ADD COLUMN id TEXT;
    UPDATE tokens SET id = lower(hex(randomblob(8)));
    CREATE UNIQUE INDEX tokens_id ON tokens(id);
    """,
    # Single-use temporary tokens (upstream Lightd's remove_on_use): deleted at their first successful use.
    """
    ALTER TABLE tokens ADD COLUMN remove_on_use INTEGER NOT NULL DEFAULT 0;
    """,
]


def _row(cursor_row: aiosqlite.Row | None) -> dict[str, Any] | None:
    return dict(cursor_row) if cursor_row is not None else None


class Store:
    """All persistent state of the daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # One writer at a time: a transaction spans awaits, and another coroutine's statement must not
        # land inside it.
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where _Transaction opens one.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._migrate()
        # SECURITY: the database holds token hashes and every server's spec: root only.
        for suffix in ("", "-wal", "-shm"):
            path = self.path.with_name(self.path.name + suffix)
            if path.exists():
                path.chmod(0o600)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self.db.execute("SELECT version FROM schema_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0
        if row is None:
            await self.db.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > len(MIGRATIONS):
            raise RuntimeError(f"database schema {version} is newer than this lightd ({len(MIGRATIONS)})")
        for step in range(version, len(MIGRATIONS)):
            await self.db.executescript("BEGIN;" + MIGRATIONS[step] + f"UPDATE schema_version SET version = {step + 1};COMMIT;")

    async def schema_version(self) -> int:
        async with self.db.execute("SELECT version FROM schema_version") as cur:
            row = await cur.fetchone()
        return int(row[0])

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        async with self.db.execute(sql, tuple(params)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        async with self.db.execute(sql, tuple(params)) as cur:
            return _row(await cur.fetchone())

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._write_lock:
            cur = await self.db.execute(sql, tuple(params))
            return cur.rowcount

    # -- volumes -------------------------------------------------------------------------------------
    async def insert_volume(self, volume_id: str, path: str) -> None:
        await self._write("INSERT INTO volumes (id, path, created_at) VALUES (?, ?, ?)", (volume_id, path, time.time()))

    async def get_volume(self, volume_id: str) -> dict[str, Any] | None:
        return await self._fetchone("SELECT * FROM volumes WHERE id = ?", (volume_id,))

    async def list_volumes(self) -> list[dict[str, Any]]:
        return await self._fetchall("SELECT * FROM volumes ORDER BY created_at")

    async def delete_volume(self, volume_id: str) -> bool:
        return await self._write("DELETE FROM volumes WHERE id = ?", (volume_id,)) > 0

    async def containers_using_volume(self, volume_id: str) -> list[str]:
        rows = await self._fetchall("SELECT internal_id FROM containers WHERE volume_id = ?", (volume_id,))
        return [r["internal_id"] for r in rows]

    # -- ports ---------------------------------------------------------------------------------------
    async def insert_port(self, ip: str, port: int, protocol: str) -> bool:
        """False when that ip/port/protocol is already in the pool."""
        return await self._write(
            "INSERT OR IGNORE INTO ports (ip, port, protocol, created_at) VALUES (?, ?, ?, ?)",
            (ip, port, protocol, time.time()),
        ) > 0

    async def list_ports(
        self, *, ip: str | None = None, protocol: str | None = None, in_use: bool | None = None,
        port: int | None = None,
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        for column, value in (("ip", ip), ("protocol", protocol), ("port", port)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if in_use is not None:
            clauses.append("in_use = ?")
            params.append(int(in_use))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._fetchall(f"SELECT * FROM ports{where} ORDER BY ip, port, protocol", params)

    async def set_port_use(self, ip: str, port: int, protocol: str, in_use: bool, container: str | None) -> bool:
        return await self._write(
            "UPDATE ports SET in_use = ?, container = ? WHERE ip = ? AND port = ? AND protocol = ?",
            (int(in_use), container, ip, port, protocol),
        ) > 0

    async def claim_ports(self, keys: list[tuple[str, int, str]], container: str) -> bool:
        """Mark every port in use by `container` in one transaction; False (and nothing changed) if any is
        missing or already used by another holder."""
        try:
            await self._claim_ports(keys, container)
        except _Abort:
            return False
        return True

    async def _claim_ports(self, keys: list[tuple[str, int, str]], container: str) -> None:
        async with self._lock_write():
            for ip, port, protocol in keys:
                row = await self._fetchone(
                    "SELECT in_use, container FROM ports WHERE ip = ? AND port = ? AND protocol = ?", (ip, port, protocol)
                )
                if row is None or (row["in_use"] and row["container"] != container):
                    raise _Abort
                await self.db.execute(
                    "UPDATE ports SET in_use = 1, container = ? WHERE ip = ? AND port = ? AND protocol = ?",
                    (container, ip, port, protocol),
                )

    async def release_ports_of(self, container: str, keep: list[tuple[str, int, str]] = ()) -> None:
        rows = await self.list_ports()
        keep_set = set(keep)
        async with self._lock_write():
            for row in rows:
                key = (row["ip"], row["port"], row["protocol"])
                if row["container"] == container and key not in keep_set:
                    await self.db.execute(
                        "UPDATE ports SET in_use = 0, container = NULL WHERE ip = ? AND port = ? AND protocol = ?", key
                    )

    async def delete_port(self, ip: str, port: int, protocol: str) -> bool:
        return await self._write(
            "DELETE FROM ports WHERE ip = ? AND port = ? AND protocol = ?", (ip, port, protocol)
        ) > 0

    def _lock_write(self) -> "_Transaction":
        return _Transaction(self.db, self._write_lock)

    # -- containers ----------------------------------------------------------------------------------
    async def insert_container(self, internal_id: str, volume_id: str, spec: dict[str, Any], install_state: str) -> None:
        now = time.time()
        await self._write(
            "INSERT INTO containers (internal_id, volume_id, spec, install_state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (internal_id, volume_id, orjson.dumps(spec).decode(), install_state, now, now),
        )

    async def get_container(self, internal_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM containers WHERE internal_id = ?", (internal_id,))
        return _decode_container(row) if row else None

    async def list_containers(self) -> list[dict[str, Any]]:
        return [_decode_container(r) for r in await self._fetchall("SELECT * FROM containers ORDER BY created_at")]

    async def update_container(self, internal_id: str, **fields: Any) -> None:
        if "spec" in fields:
            fields["spec"] = orjson.dumps(fields["spec"]).decode()
        if "oom_killed" in fields:
            fields["oom_killed"] = int(bool(fields["oom_killed"]))
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._write(
            f"UPDATE containers SET {assignments} WHERE internal_id = ?", (*fields.values(), internal_id)
        )

    async def delete_container(self, internal_id: str) -> bool:
        return await self._write("DELETE FROM containers WHERE internal_id = ?", (internal_id,)) > 0

    # -- temporary tokens ----------------------------------------------------------------------------
    async def insert_token(self, token_hash: str, container: str | None, purpose: str, created_at: float, expires_at: float,
                           token_id: str | None = None, remove_on_use: bool = False) -> None:
        """`token_id` is the public id (a random one when None)."""
        await self._write(
            "INSERT INTO tokens (hash, container, purpose, created_at, expires_at, id, remove_on_use)"
            " VALUES (?, ?, ?, ?, ?, COALESCE(?, lower(hex(randomblob(8)))), ?)",
            (token_hash, container, purpose, created_at, expires_at, token_id, int(remove_on_use)),
        )

    async def consume_token(self, token_hash: str) -> bool:
        """Delete a single-use token as it is used; False when it is already gone (used by someone else)."""
        return await self._write("DELETE FROM tokens WHERE hash = ? AND remove_on_use = 1", (token_hash,)) == 1

    async def get_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self._fetchone("SELECT * FROM tokens WHERE hash = ?", (token_hash,))

    async def live_tokens(self, now: float) -> list[dict[str, Any]]:
        """Unexpired tokens, oldest first, without their hashes."""
        return await self._fetchall(
            "SELECT id, container, purpose, created_at, expires_at, remove_on_use FROM tokens WHERE expires_at > ?"
            " ORDER BY created_at, id",
            (now,),
        )

    async def delete_token(self, token_id: str) -> dict[str, Any] | None:
        """Remove the token with this public id; the row removed (without its hash), or None."""
        async with self._lock_write():
            row = await self._fetchone(
                "SELECT id, container, purpose, created_at, expires_at, remove_on_use FROM tokens WHERE id = ?",
                (token_id,))
            if row is not None:
                await self.db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            return row

    async def delete_expired_tokens(self, now: float) -> int:
        return await self._write("DELETE FROM tokens WHERE expires_at < ?", (now,))

    async def delete_tokens_of(self, container: str) -> int:
        return await self._write("DELETE FROM tokens WHERE container = ?", (container,))

    # -- remote-sync outbox --------------------------------------------------------------------------
    async def enqueue_update(self, server: str, payload: dict[str, Any], max_rows: int) -> tuple[int, int]:
        """Append an update; returns (outbox seq, per-server seq). Past `max_rows` the oldest row is dropped
        into outbox_dropped with reason 'overflow'."""
        async with self._lock_write():
            row = await self._fetchone(
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
            count = (await self._fetchone("SELECT COUNT(*) AS n FROM outbox"))["n"]
            if count > max_rows:
                oldest = await self._fetchone("SELECT * FROM outbox ORDER BY seq LIMIT 1")
                await self._drop_outbox_row(oldest, "overflow")
        return int(seq), server_seq

    async def pending_updates(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT * FROM outbox ORDER BY seq LIMIT ?", (limit,))
        for row in rows:
            row["payload"] = orjson.loads(row["payload"])
        return rows

    async def outbox_depth(self) -> int:
        return (await self._fetchone("SELECT COUNT(*) AS n FROM outbox"))["n"]

    async def dropped_count(self) -> int:
        """Every update ever dropped (outbox_dropped keeps only the newest OUTBOX_DROPPED_KEEP of them)."""
        row = await self._fetchone("SELECT value FROM counters WHERE name = 'outbox_dropped'")
        return int(row["value"]) if row else 0

    async def list_dropped(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently dropped updates, newest first, with their reason."""
        rows = await self._fetchall("SELECT * FROM outbox_dropped ORDER BY dropped_at DESC, seq DESC LIMIT ?", (limit,))
        for row in rows:
            row["payload"] = orjson.loads(row["payload"])
        return rows

    async def ack_update(self, seq: int) -> None:
        await self._write("DELETE FROM outbox WHERE seq = ?", (seq,))

    async def bump_attempts(self, seq: int) -> None:
        await self._write("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    async def drop_update(self, seq: int, reason: str) -> None:
        async with self._lock_write():
            row = await self._fetchone("SELECT * FROM outbox WHERE seq = ?", (seq,))
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

    # -- Container Codes front end --------------------------------------------------------------------
    _CC_JOB_FIELDS = frozenset({"status", "container", "volume_id", "exit_code", "error", "logs", "output_files",
                                "started_at", "finished_at", "attempts"})

    async def insert_cc_job(self, job_id: str, name: str, priority: int, request: dict[str, Any], boot: float) -> None:
        now = time.time()
        await self._write(
            "INSERT INTO cc_jobs (id, name, status, priority, request, boot, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
            (job_id, name, priority, orjson.dumps(request).decode(), boot, now, now),
        )

    async def get_cc_job(self, job_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM cc_jobs WHERE id = ?", (job_id,))
        return _decode_cc_job(row) if row else None

    async def list_cc_jobs(self, *, status: str | None = None, created_since: float | None = None,
                           limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        where, params = ["1 = 1"], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if created_since is not None:
            where.append("created_at >= ?")
            params.append(created_since)
        clause = " AND ".join(where)
        total = await self._fetchone(f"SELECT COUNT(*) AS n FROM cc_jobs WHERE {clause}", params)
        rows = await self._fetchall(
            f"SELECT * FROM cc_jobs WHERE {clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return [_decode_cc_job(r) for r in rows], int(total["n"]) if total else 0

    async def queued_cc_jobs(self, limit: int) -> list[str]:
        """Ids of queued jobs, highest priority first, then oldest."""
        rows = await self._fetchall(
            "SELECT id FROM cc_jobs WHERE status = 'queued' ORDER BY priority DESC, created_at, id LIMIT ?", (limit,)
        )
        return [r["id"] for r in rows]

    async def claim_cc_job(self, job_id: str, boot: float) -> bool:
        """Move a queued job to running for this daemon run; False when someone else took it (or it was cancelled)."""
        now = time.time()
        return await self._write(
            "UPDATE cc_jobs SET status = 'running', boot = ?, attempts = attempts + 1, started_at = ?, error = NULL,"
            " exit_code = NULL, finished_at = NULL, updated_at = ? WHERE id = ? AND status = 'queued'",
            (boot, now, now, job_id),
        ) == 1

    async def update_cc_job(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - self._CC_JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        for key in ("logs", "output_files"):
            if key in fields:
                fields[key] = orjson.dumps(fields[key]).decode()
        columns = ", ".join(f"{name} = ?" for name in fields)
        await self._write(f"UPDATE cc_jobs SET {columns}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), job_id))

    async def finish_cc_job(self, job_id: str, from_status: str, **fields: Any) -> bool:
        """Set a terminal status only if the job is still in `from_status` (a cancel may have won)."""
        status = fields.pop("status")
        for key in ("logs", "output_files"):
            if key in fields:
                fields[key] = orjson.dumps(fields[key]).decode()
        columns = "".join(f", {name} = ?" for name in fields)
        return await self._write(
            f"UPDATE cc_jobs SET status = ?{columns}, updated_at = ? WHERE id = ? AND status = ?",
            (status, *fields.values(), time.time(), job_id, from_status),
        ) == 1

    async def cancel_queued_cc_job(self, job_id: str) -> bool:
        now = time.time()
        return await self._write(
            "UPDATE cc_jobs SET status = 'cancelled', finished_at = ?, updated_at = ? WHERE id = ? AND status = 'queued'",
            (now, now, job_id),
        ) == 1

    async def requeue_cc_job(self, job_id: str) -> bool:
        """A failed or cancelled job back to queued (retry)."""
        return await self._write(
            "UPDATE cc_jobs SET status = 'queued', error = NULL, exit_code = NULL, finished_at = NULL, updated_at = ?"
            " WHERE id = ? AND status IN ('failed', 'cancelled')",
            (time.time(), job_id),
        ) == 1

    async def fail_interrupted_cc_jobs(self, boot: float, error: str) -> list[dict[str, Any]]:
        """Jobs that were running in an earlier daemon run become failed; returns them (as they were)."""
        async with self._lock_write():
            rows = await self._fetchall("SELECT * FROM cc_jobs WHERE status = 'running' AND boot < ?", (boot,))
            now = time.time()
            await self.db.execute(
                "UPDATE cc_jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ?"
                " WHERE status = 'running' AND boot < ?",
                (error, now, now, boot),
            )
        return [_decode_cc_job(r) for r in rows]

    async def put_cc_proxy_item(self, table: str, key: str, config: dict[str, Any], *, create: bool) -> bool:
        """Insert (create) or replace an existing upstream/route; False on a duplicate create or a missing update."""
        sql_table, column = _CC_PROXY_TABLES[table]
        text = orjson.dumps(config).decode()
        if create:
            return await self._write(
                f"INSERT OR IGNORE INTO {sql_table} ({column}, config, created_at) VALUES (?, ?, ?)", (key, text, time.time())
            ) == 1
        return await self._write(f"UPDATE {sql_table} SET config = ? WHERE {column} = ?", (text, key)) == 1

    async def list_cc_proxy_items(self, table: str) -> list[dict[str, Any]]:
        sql_table, _ = _CC_PROXY_TABLES[table]
        rows = await self._fetchall(f"SELECT config FROM {sql_table} ORDER BY created_at, rowid")
        return [orjson.loads(r["config"]) for r in rows]

    async def delete_cc_proxy_item(self, table: str, key: str) -> bool:
        sql_table, column = _CC_PROXY_TABLES[table]
        return await self._write(f"DELETE FROM {sql_table} WHERE {column} = ?", (key,)) == 1

    async def get_cc_setting(self, key: str) -> Any:
        row = await self._fetchone("SELECT value FROM cc_settings WHERE key = ?", (key,))
        return orjson.loads(row["value"]) if row else None

    async def set_cc_setting(self, key: str, value: Any) -> None:
        await self._write("INSERT OR REPLACE INTO cc_settings (key, value) VALUES (?, ?)", (key, orjson.dumps(value).decode()))


    # -- ProxiCloud front end ------------------------------------------------------------------------
    async def proxicloud_vmids(self) -> list[dict[str, Any]]:
        """The live vmid rows (options decoded), lowest vmid first."""
        rows = await self._fetchall("SELECT * FROM proxicloud_vmids WHERE retired_at IS NULL ORDER BY vmid")
        for row in rows:
            row["options"] = orjson.loads(row["options"])
        return rows

    async def proxicloud_assign_vmid(self, server: str, options: dict[str, Any], first: int) -> tuple[int, bool]:
        """The live vmid of `server`, allocated (one above any vmid ever given, at least `first`) when it
        has none; (vmid, True when allocated now)."""
        async with self._lock_write():
            row = await self._fetchone(
                "SELECT vmid FROM proxicloud_vmids WHERE server = ? AND retired_at IS NULL", (server,)
            )
            if row is not None:
                return int(row["vmid"]), False
            row = await self._fetchone(
                "INSERT INTO proxicloud_vmids (vmid, server, options, created_at)"
                " SELECT MAX(COALESCE(MAX(vmid) + 1, ?), ?), ?, ?, ? FROM proxicloud_vmids RETURNING vmid",
                (first, first, server, orjson.dumps(options).decode(), time.time()),
            )
        return int(row["vmid"]), True

    async def proxicloud_retire_vmid(self, server: str) -> int | None:
        """Retire the live vmid of `server` (kept, never given again) and drop its samples; the vmid."""
        async with self._lock_write():
            row = await self._fetchone(
                "UPDATE proxicloud_vmids SET retired_at = ? WHERE server = ? AND retired_at IS NULL RETURNING vmid",
                (time.time(), server),
            )
            if row is None:
                return None
            await self.db.execute("DELETE FROM proxicloud_samples WHERE vmid = ?", (row["vmid"],))
        return int(row["vmid"])

    async def proxicloud_add_samples(self, rows: list[tuple[int, float, float, int, int, int, int, int]]) -> None:
        """Append (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk) rows."""
        if not rows:
            return
        async with self._lock_write():
            await self.db.executemany(
                "INSERT INTO proxicloud_samples (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def proxicloud_has_samples(self) -> bool:
        return await self._fetchone("SELECT 1 AS one FROM proxicloud_samples LIMIT 1") is not None

    async def proxicloud_compact_samples(self, before: float, bucket: float) -> int:
        """Samples older than `before` become one row per vmid and `bucket` seconds (averages; network
        summed; memory total and disk the largest); returns the rows removed. Buckets already down to one
        row are left as they are."""
        group = "vmid, CAST(ts / :bucket AS INTEGER)"
        params = {"before": before, "bucket": bucket}
        async with self._lock_write():
            last = (await self._fetchone("SELECT COALESCE(MAX(rowid), 0) AS n FROM proxicloud_samples"))["n"]
            await self.db.execute(
                "INSERT INTO proxicloud_samples (vmid, ts, cpu, memory, memory_total, net_in, net_out, disk)"
                " SELECT vmid, MIN(ts), AVG(cpu), CAST(AVG(memory) AS INTEGER), MAX(memory_total), SUM(net_in),"
                f" SUM(net_out), MAX(disk) FROM proxicloud_samples WHERE ts < :before GROUP BY {group}"
                " HAVING COUNT(*) > 1",
                params,
            )
            cur = await self.db.execute(
                f"DELETE FROM proxicloud_samples WHERE rowid <= :last AND ts < :before AND ({group}) IN"
                f" (SELECT {group} FROM proxicloud_samples WHERE rowid > :last)",
                {**params, "last": last},
            )
            return cur.rowcount

    async def proxicloud_prune_samples(self, before: float) -> int:
        return await self._write("DELETE FROM proxicloud_samples WHERE ts < ?", (before,))

    async def proxicloud_series(self, vmid: int, since: float, bucket: float) -> list[dict[str, Any]]:
        """Samples of `vmid` since `since`, one row per `bucket` seconds: averages, extremes and sums."""
        return await self._fetchall(
            "SELECT CAST(ts / ? AS INTEGER) * ? AS ts, AVG(cpu) AS cpu, MIN(cpu) AS cpu_min, MAX(cpu) AS cpu_max,"
            " AVG(memory) AS memory, MAX(memory_total) AS memory_total, SUM(net_in) AS net_in,"
            " SUM(net_out) AS net_out, MAX(disk) AS disk, COUNT(*) AS samples"
            " FROM proxicloud_samples WHERE vmid = ? AND ts >= ? GROUP BY CAST(ts / ? AS INTEGER) ORDER BY 1",
            (bucket, bucket, vmid, since, bucket),
        )

    async def proxicloud_add_activity(
        self, action: str, vmid: int | None, name: str, details: str | None, keep: int,
    ) -> None:
        """Append one activity entry; only the newest `keep` entries are kept."""
        async with self._lock_write():
            cur = await self.db.execute(
                "INSERT INTO proxicloud_activity (ts, action, vmid, name, details) VALUES (?, ?, ?, ?, ?)",
                (time.time(), action, vmid, name, details),
            )
            await self.db.execute("DELETE FROM proxicloud_activity WHERE id <= ?", (cur.lastrowid - keep,))

    async def proxicloud_activity(self, limit: int) -> list[dict[str, Any]]:
        """The newest activity entries, newest first."""
        return await self._fetchall("SELECT * FROM proxicloud_activity ORDER BY id DESC LIMIT ?", (limit,))


class _Abort(Exception):
    """Raised inside a transaction to roll it back."""


class _Transaction:
    """`async with`: holds the write lock, commits on success, rolls back on error. Use `self.db.execute`
    inside (never `_write`, which would wait for the lock held here)."""

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self.db = db
        self.lock = lock

    async def __aenter__(self) -> None:
        await self.lock.acquire()
        try:
            await self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()


def _decode_container(row: dict[str, Any]) -> dict[str, Any]:
    row["spec"] = orjson.loads(row["spec"])
    row["oom_killed"] = bool(row["oom_killed"])
    return row


_CC_PROXY_TABLES = {"upstreams": ("cc_proxy_upstreams", "name"), "routes": ("cc_proxy_routes", "id")}


def _decode_cc_job(row: dict[str, Any]) -> dict[str, Any]:
    row["request"] = orjson.loads(row["request"])
    row["logs"] = orjson.loads(row["logs"])
    row["output_files"] = orjson.loads(row["output_files"])
    return row
