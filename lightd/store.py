"""SQLite persistence through aiosqlite: the one connection, the core schema and its forward migrations,
and the core's queries (servers, volumes, ports, tokens; the outbox's are in outbox_store.py).

One connection in WAL mode; aiosqlite runs each call on its own worker thread so the event loop never
blocks on the disk. A front end keeps its own tables in its own `store.py` (a NamespacedStore) on this
connection, migrated in its own namespace of `schema_versions` the first time it is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from lightd.outbox_store import OutboxQueries

# Each entry migrates the schema from version i to i + 1. Append only; never edit a released step (3 and 4
# were emptied when their tables moved to the front ends: see below).
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
    # Steps 3 and 4 made the Container Codes and ProxiCloud tables; those front ends now own them (each in its
    # own namespace of schema_versions, created on first use), so for a new database these steps do nothing.
    # A database that ran them keeps the tables and their rows.
    "",
    "",
    # Named counters; the first counts every remote-sync update ever dropped, so that outbox_dropped can keep
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
    # Front ends' own tables are versioned apart, one row per namespace (see lightd/namespaced_store.py).
    """
    CREATE TABLE schema_versions (
        namespace   TEXT PRIMARY KEY,
        version     INTEGER NOT NULL
    );
    """,
]


def _row(cursor_row: aiosqlite.Row | None) -> dict[str, Any] | None:
    return dict(cursor_row) if cursor_row is not None else None


class Store(OutboxQueries):
    """The daemon's SQLite connection and its core state: servers, volumes, ports, tokens (and, from
    OutboxQueries, the remote-sync outbox and its counters)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self.write_lock = asyncio.Lock()
        """One writer at a time: a transaction spans awaits, and another coroutine's statement must not land
        inside it. Held by `write` and `transaction`, and by a front end's namespace migration."""

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where Transaction opens one.
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

    # -- shared with the stores that use this connection (outbox, front ends) ---------------------------
    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Every row of a query, as dicts."""
        async with self.db.execute(sql, tuple(params)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        """The first row of a query as a dict, or None."""
        async with self.db.execute(sql, tuple(params)) as cur:
            return _row(await cur.fetchone())

    async def write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement under the write lock; the rows it changed."""
        async with self.write_lock:
            cur = await self.db.execute(sql, tuple(params))
            return cur.rowcount

    def transaction(self) -> Transaction:
        """`async with store.transaction():` several statements, all or none (use `store.db.execute` inside)."""
        return Transaction(self.db, self.write_lock)

    # -- volumes -------------------------------------------------------------------------------------
    async def insert_volume(self, volume_id: str, path: str) -> None:
        await self.write("INSERT INTO volumes (id, path, created_at) VALUES (?, ?, ?)", (volume_id, path, time.time()))

    async def get_volume(self, volume_id: str) -> dict[str, Any] | None:
        return await self.fetchone("SELECT * FROM volumes WHERE id = ?", (volume_id,))

    async def list_volumes(self) -> list[dict[str, Any]]:
        return await self.fetchall("SELECT * FROM volumes ORDER BY created_at")

    async def delete_volume(self, volume_id: str) -> bool:
        return await self.write("DELETE FROM volumes WHERE id = ?", (volume_id,)) > 0

    async def containers_using_volume(self, volume_id: str) -> list[str]:
        """The servers whose own volume it is, or that mount it (`volume_mounts` of their stored spec)."""
        rows = await self.fetchall(
            "SELECT internal_id FROM containers WHERE volume_id = ? OR EXISTS (SELECT 1 FROM"
            " json_each(containers.spec, '$.volume_mounts') AS m WHERE json_extract(m.value, '$.volume_id') = ?)"
            " ORDER BY internal_id", (volume_id, volume_id))
        return [r["internal_id"] for r in rows]

    # -- ports ---------------------------------------------------------------------------------------
    async def insert_port(self, ip: str, port: int, protocol: str) -> bool:
        """False when that ip/port/protocol is already in the pool."""
        return await self.write(
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
        return await self.fetchall(f"SELECT * FROM ports{where} ORDER BY ip, port, protocol", params)

    async def set_port_use(self, ip: str, port: int, protocol: str, in_use: bool, container: str | None) -> bool:
        return await self.write(
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
        async with self.transaction():
            for ip, port, protocol in keys:
                row = await self.fetchone(
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
        async with self.transaction():
            for row in rows:
                key = (row["ip"], row["port"], row["protocol"])
                if row["container"] == container and key not in keep_set:
                    await self.db.execute(
                        "UPDATE ports SET in_use = 0, container = NULL WHERE ip = ? AND port = ? AND protocol = ?", key
                    )

    async def delete_port(self, ip: str, port: int, protocol: str) -> bool:
        return await self.write(
            "DELETE FROM ports WHERE ip = ? AND port = ? AND protocol = ?", (ip, port, protocol)
        ) > 0

    # -- containers ----------------------------------------------------------------------------------
    async def insert_container(self, internal_id: str, volume_id: str, spec: dict[str, Any], install_state: str) -> None:
        now = time.time()
        await self.write(
            "INSERT INTO containers (internal_id, volume_id, spec, install_state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (internal_id, volume_id, orjson.dumps(spec).decode(), install_state, now, now),
        )

    async def get_container(self, internal_id: str) -> dict[str, Any] | None:
        row = await self.fetchone("SELECT * FROM containers WHERE internal_id = ?", (internal_id,))
        return _decode_container(row) if row else None

    async def list_containers(self) -> list[dict[str, Any]]:
        return [_decode_container(r) for r in await self.fetchall("SELECT * FROM containers ORDER BY created_at")]

    async def update_container(self, internal_id: str, **fields: Any) -> None:
        if "spec" in fields:
            fields["spec"] = orjson.dumps(fields["spec"]).decode()
        if "oom_killed" in fields:
            fields["oom_killed"] = int(bool(fields["oom_killed"]))
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self.write(
            f"UPDATE containers SET {assignments} WHERE internal_id = ?", (*fields.values(), internal_id)
        )

    async def delete_container(self, internal_id: str) -> bool:
        return await self.write("DELETE FROM containers WHERE internal_id = ?", (internal_id,)) > 0

    # -- temporary tokens ----------------------------------------------------------------------------
    async def insert_token(self, token_hash: str, container: str | None, purpose: str, created_at: float, expires_at: float,
                           token_id: str | None = None, remove_on_use: bool = False) -> None:
        """`token_id` is the public id (a random one when None)."""
        await self.write(
            "INSERT INTO tokens (hash, container, purpose, created_at, expires_at, id, remove_on_use)"
            " VALUES (?, ?, ?, ?, ?, COALESCE(?, lower(hex(randomblob(8)))), ?)",
            (token_hash, container, purpose, created_at, expires_at, token_id, int(remove_on_use)),
        )

    async def consume_token(self, token_hash: str) -> bool:
        """Delete a single-use token as it is used; False when it is already gone (used by someone else)."""
        return await self.write("DELETE FROM tokens WHERE hash = ? AND remove_on_use = 1", (token_hash,)) == 1

    async def get_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self.fetchone("SELECT * FROM tokens WHERE hash = ?", (token_hash,))

    async def live_tokens(self, now: float) -> list[dict[str, Any]]:
        """Unexpired tokens, oldest first, without their hashes."""
        return await self.fetchall(
            "SELECT id, container, purpose, created_at, expires_at, remove_on_use FROM tokens WHERE expires_at > ?"
            " ORDER BY created_at, id",
            (now,),
        )

    async def delete_token(self, token_id: str) -> dict[str, Any] | None:
        """Remove the token with this public id; the row removed (without its hash), or None."""
        async with self.transaction():
            row = await self.fetchone(
                "SELECT id, container, purpose, created_at, expires_at, remove_on_use FROM tokens WHERE id = ?",
                (token_id,))
            if row is not None:
                await self.db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            return row

    async def delete_expired_tokens(self, now: float) -> int:
        return await self.write("DELETE FROM tokens WHERE expires_at < ?", (now,))

    async def delete_tokens_of(self, container: str) -> int:
        return await self.write("DELETE FROM tokens WHERE container = ?", (container,))


class _Abort(Exception):
    """Raised inside a transaction to roll it back."""


class Transaction:
    """`async with`: holds the write lock, commits on success, rolls back on error. Use `db.execute`
    inside (never `write`, which would wait for the lock held here)."""

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

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            await self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()


def _decode_container(row: dict[str, Any]) -> dict[str, Any]:
    row["spec"] = orjson.loads(row["spec"])
    row["oom_killed"] = bool(row["oom_killed"])
    return row
