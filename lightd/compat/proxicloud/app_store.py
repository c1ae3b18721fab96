"""The records the ProxiCloud web app's API keeps beside lightd's own state: projects and which vmid belongs
to which, what a volume made through it was called (name, storage label, size, type), the mount-point name
(`mp0`-`mp9`) a volume was attached under (whether it is attached, and to which container, is the server's
`volume_mounts`: a row its spec does not back is ignored), and volume snapshots (each one a
lightd volume holding a copy). On the daemon's connection, in the `proxicloud_app` namespace, made on the
first write."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson
from aiohttp import web

from lightd.errors import Conflict
from lightd.namespaced_store import NamespacedStore

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS proxicloud_projects (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        fields      TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proxicloud_project_members (
        vmid        INTEGER PRIMARY KEY,
        project_id  TEXT NOT NULL REFERENCES proxicloud_projects(id)
    );
    CREATE TABLE IF NOT EXISTS proxicloud_volume_records (
        volume_id   TEXT PRIMARY KEY,
        volid       TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL,
        storage     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        size_gb     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proxicloud_attachments (
        volume_id   TEXT PRIMARY KEY,
        vmid        INTEGER NOT NULL,
        mountpoint  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proxicloud_snapshots (
        volume_id   TEXT NOT NULL,
        name        TEXT NOT NULL,
        copy_id     TEXT NOT NULL UNIQUE,
        description TEXT,
        size        INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (volume_id, name)
    );
    """,
)


class ProxiCloudAppStore(NamespacedStore):
    """Projects, volume records, attachments and snapshots of the ProxiCloud web app's API."""

    NAMESPACE = "proxicloud_app"
    MIGRATIONS = MIGRATIONS

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not await self.ensure(create=False):
            return []
        return await self.core.fetchall(sql, params)

    async def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        await self.ensure()
        try:
            return await self.core.write(sql, params)
        except sqlite3.IntegrityError:
            # Two requests racing past the routes' own checks for the same name: the second one loses.
            raise Conflict("a project, volume or snapshot of that name was just made") from None

    # -- projects ------------------------------------------------------------------------------------
    async def projects(self) -> list[dict[str, Any]]:
        """Every project (its `fields` decoded), oldest first."""
        rows = await self._all("SELECT * FROM proxicloud_projects ORDER BY created_at, id")
        for row in rows:
            row["fields"] = orjson.loads(row["fields"])
        return rows

    async def add_project(self, project_id: str, name: str, fields: dict[str, Any]) -> None:
        now = int(time.time())
        await self._write("INSERT INTO proxicloud_projects (id, name, fields, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                          (project_id, name, orjson.dumps(fields).decode(), now, now))

    async def update_project(self, project_id: str, name: str, fields: dict[str, Any]) -> None:
        await self._write("UPDATE proxicloud_projects SET name = ?, fields = ?, updated_at = ? WHERE id = ?",
                          (name, orjson.dumps(fields).decode(), int(time.time()), project_id))

    async def delete_project(self, project_id: str) -> None:
        await self._write("DELETE FROM proxicloud_project_members WHERE project_id = ?", (project_id,))
        await self._write("DELETE FROM proxicloud_projects WHERE id = ?", (project_id,))

    async def members(self) -> dict[int, str]:
        """vmid -> project id."""
        rows = await self._all("SELECT vmid, project_id FROM proxicloud_project_members")
        return {int(r["vmid"]): r["project_id"] for r in rows}

    async def assign(self, vmid: int, project_id: str | None) -> None:
        """Put `vmid` in a project; None takes it out of any."""
        if project_id is None:
            if await self.ensure(create=False):
                await self.core.write("DELETE FROM proxicloud_project_members WHERE vmid = ?", (vmid,))
            return
        await self._write("INSERT INTO proxicloud_project_members (vmid, project_id) VALUES (?, ?)"
                          " ON CONFLICT(vmid) DO UPDATE SET project_id = excluded.project_id", (vmid, project_id))

    # -- volumes -------------------------------------------------------------------------------------
    async def volume_records(self) -> dict[str, dict[str, Any]]:
        """volume id -> what its create through this API named it."""
        return {r["volume_id"]: r for r in await self._all("SELECT * FROM proxicloud_volume_records")}

    async def add_volume_record(self, volume_id: str, volid: str, name: str, storage: str, kind: str, size_gb: int) -> None:
        await self._write("INSERT INTO proxicloud_volume_records (volume_id, volid, name, storage, kind, size_gb, created_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)", (volume_id, volid, name, storage, kind, size_gb, int(time.time())))

    async def forget_volume(self, volume_id: str) -> None:
        """Drop a deleted volume's record, attachment and snapshot rows."""
        if not await self.ensure(create=False):
            return
        for table in ("proxicloud_volume_records", "proxicloud_attachments", "proxicloud_snapshots"):
            await self.core.write(f"DELETE FROM {table} WHERE volume_id = ?", (volume_id,))

    async def attachments(self) -> dict[str, tuple[int, str]]:
        """volume id -> (vmid, mountpoint) as attached here (names only: see the module's docstring)."""
        rows = await self._all("SELECT * FROM proxicloud_attachments")
        return {r["volume_id"]: (int(r["vmid"]), r["mountpoint"]) for r in rows}

    async def attach(self, volume_id: str, vmid: int, mountpoint: str) -> None:
        await self._write("INSERT INTO proxicloud_attachments (volume_id, vmid, mountpoint) VALUES (?, ?, ?)"
                          " ON CONFLICT(volume_id) DO UPDATE SET vmid = excluded.vmid, mountpoint = excluded.mountpoint",
                          (volume_id, vmid, mountpoint))

    async def detach(self, volume_id: str) -> None:
        await self._write("DELETE FROM proxicloud_attachments WHERE volume_id = ?", (volume_id,))

    async def container_gone(self, vmid: int) -> None:
        """A deleted container leaves its project and lets go of its attached volumes."""
        if await self.ensure(create=False):
            await self.core.write("DELETE FROM proxicloud_project_members WHERE vmid = ?", (vmid,))
            await self.core.write("DELETE FROM proxicloud_attachments WHERE vmid = ?", (vmid,))

    # -- snapshots -----------------------------------------------------------------------------------
    async def snapshots(self, volume_id: str | None = None) -> list[dict[str, Any]]:
        """The snapshots of one volume (every snapshot when None), oldest first."""
        if volume_id is None:
            return await self._all("SELECT * FROM proxicloud_snapshots ORDER BY created_at, name")
        return await self._all("SELECT * FROM proxicloud_snapshots WHERE volume_id = ? ORDER BY created_at, name",
                               (volume_id,))

    async def add_snapshot(self, volume_id: str, name: str, copy_id: str, description: str | None) -> None:
        """Recorded before the copy is made, so a failure at any point knows what to clean up."""
        await self._write("INSERT INTO proxicloud_snapshots (volume_id, name, copy_id, description, created_at)"
                          " VALUES (?, ?, ?, ?, ?)", (volume_id, name, copy_id, description, int(time.time())))

    async def snapshot_done(self, copy_id: str, size: int) -> None:
        await self._write("UPDATE proxicloud_snapshots SET size = ? WHERE copy_id = ?", (size, copy_id))

    async def drop_snapshot(self, copy_id: str) -> None:
        await self._write("DELETE FROM proxicloud_snapshots WHERE copy_id = ?", (copy_id,))


RECORDS = web.AppKey("proxicloud_records", ProxiCloudAppStore)
"""On the web-app flavour's applications: the one record store of the daemon's ProxiCloud front end."""
