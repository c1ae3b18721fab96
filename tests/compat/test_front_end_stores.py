"""Front ends keep their own tables (compat/<name>/store.py) on the daemon's connection, versioned in their
own namespace: a front end never used leaves no tables, and a database from before the move (when core
migrations 3 and 4 made those tables) keeps its rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from lightd import keys
from lightd.app import create_app
from lightd.compat.container_codes.store import ContainerCodesStore
from lightd.compat.proxicloud.store import ProxiCloudStore
from lightd.store import MIGRATIONS, Store

# Core migrations 3 and 4 as released (schema version 7 databases ran them): the fixture for an old database.
OLD_MIGRATION_3 = """
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
"""
OLD_MIGRATION_4 = """
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
"""
OLD_VERSION = 7


async def front_end_tables(store: Store) -> set[str]:
    rows = await store.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'"
                                " AND (name LIKE 'cc\\_%' ESCAPE '\\' OR name LIKE 'proxicloud\\_%' ESCAPE '\\')")
    return {r["name"] for r in rows}


async def namespaces(store: Store) -> dict[str, int]:
    return {r["namespace"]: r["version"] for r in await store.fetchall("SELECT * FROM schema_versions")}


async def test_a_fresh_database_has_front_end_tables_only_once_used(tmp_path: Path):
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    try:
        codes, cloud = ContainerCodesStore(lambda: core), ProxiCloudStore(lambda: core)
        # reads of a front end never used find nothing and make nothing
        assert await codes.list_jobs() == ([], 0)
        assert await codes.get_job("job_x") is None and await codes.queued_jobs(4) == []
        assert await codes.fail_interrupted_jobs(0.0, "x") == [] and await codes.get_setting("k") is None
        assert await codes.list_proxy_items("routes") == [] and not await codes.delete_proxy_item("routes", "r")
        assert await cloud.vmids() == [] and await cloud.activity(10) == [] and not await cloud.has_samples()
        assert await cloud.retire_vmid("a") is None and await cloud.prune_samples(0.0) == 0
        assert await cloud.series(100, 0, 60) == []
        assert await front_end_tables(core) == set() and await namespaces(core) == {}

        await codes.set_setting("files_volume", "vol-1")
        assert await front_end_tables(core) == {"cc_jobs", "cc_proxy_upstreams", "cc_proxy_routes", "cc_settings", "cc_asked_images"}
        assert await namespaces(core) == {"container_codes": 2}
        assert await codes.get_setting("files_volume") == "vol-1"

        assert await cloud.assign_vmid("a", {}, 100) == (100, True)
        assert {"proxicloud_vmids", "proxicloud_samples", "proxicloud_activity"} <= await front_end_tables(core)
        assert await namespaces(core) == {"container_codes": 2, "proxicloud": 1}
    finally:
        await core.close()
    # reopened: the core does not touch them, the front ends find them
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    try:
        assert await ProxiCloudStore(lambda: core).vmids() == [
            {"vmid": 100, "server": "a", "options": {}, "created_at": (await core.fetchone(
                "SELECT created_at FROM proxicloud_vmids"))["created_at"], "retired_at": None}]
        assert await ContainerCodesStore(lambda: core).get_setting("files_volume") == "vol-1"
    finally:
        await core.close()


async def build_old_database(path: Path) -> None:
    """A database at schema version 7 as the released lightd left it, with rows in the front ends' tables."""
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute(f"INSERT INTO schema_version (version) VALUES ({OLD_VERSION})")
        for step in range(OLD_VERSION):
            sql = {2: OLD_MIGRATION_3, 3: OLD_MIGRATION_4}.get(step, MIGRATIONS[step])
            await db.executescript("BEGIN;" + sql + "COMMIT;")
        await db.execute(
            "INSERT INTO cc_jobs (id, name, status, priority, request, boot, created_at, updated_at)"
            " VALUES ('job_old', 'old job', 'completed', 1, '{\"image\": \"x\"}', 1.0, 2.0, 3.0)")
        await db.execute("INSERT INTO cc_settings (key, value) VALUES ('proxy_config', '{\"enabled\": true}')")
        await db.execute("INSERT INTO cc_proxy_upstreams (name, config, created_at) VALUES ('up', '{\"name\": \"up\"}', 1.0)")
        await db.execute("INSERT INTO proxicloud_vmids (vmid, server, options, created_at) VALUES (100, 'game1', '{\"cores\": 2}', 1.0)")
        await db.execute("INSERT INTO proxicloud_vmids (vmid, server, created_at, retired_at) VALUES (101, 'gone', 1.0, 2.0)")
        await db.execute("INSERT INTO proxicloud_samples VALUES (100, 1000.0, 5.0, 1, 2, 3, 4, 5)")
        await db.execute("INSERT INTO proxicloud_activity (ts, action, vmid, name) VALUES (1.0, 'create', 100, 'game1')")


async def test_an_old_database_keeps_its_front_end_rows(tmp_path: Path):
    await build_old_database(tmp_path / "db.sqlite")
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    try:
        assert await core.schema_version() == len(MIGRATIONS)
        assert len(await front_end_tables(core)) == 7 and await namespaces(core) == {}
        codes, cloud = ContainerCodesStore(lambda: core), ProxiCloudStore(lambda: core)

        job = await codes.get_job("job_old")
        assert (job["name"], job["status"], job["request"]) == ("old job", "completed", {"image": "x"})
        assert await codes.get_setting("proxy_config") == {"enabled": True}
        assert await codes.list_proxy_items("upstreams") == [{"name": "up"}]
        assert await namespaces(core) == {"container_codes": 2}  # recorded, the tables left as they were

        assert [(r["vmid"], r["server"], r["options"]) for r in await cloud.vmids()] == [(100, "game1", {"cores": 2})]
        assert await cloud.assign_vmid("new", {}, 100) == (102, True)  # retired 101 is never given again
        assert [(r["ts"], r["cpu"]) for r in await cloud.series(100, 0, 60)] == [(960.0, 5.0)]
        assert [r["action"] for r in await cloud.activity(10)] == ["create"]
        assert await namespaces(core) == {"container_codes": 2, "proxicloud": 1}
    finally:
        await core.close()


async def test_the_core_migrations_make_no_front_end_tables(tmp_path: Path):
    """A database from before the front ends' migrations (schema 2) upgrades without making their tables."""
    path = tmp_path / "db.sqlite"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute("INSERT INTO schema_version (version) VALUES (2)")
        for step in range(2):
            await db.executescript("BEGIN;" + MIGRATIONS[step] + "COMMIT;")
    core = Store(path)
    await core.open()
    try:
        assert await core.schema_version() == len(MIGRATIONS)
        assert await front_end_tables(core) == set()
        assert await core.dropped_count() == 0  # later core migrations still ran, in order
    finally:
        await core.close()


async def test_a_daemon_whose_front_ends_are_asked_nothing_stateful_makes_no_tables(
    aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], node_token: str, no_blocking_calls: None,
):
    """Mounted on the main port (the default): health checks and empty listings make no tables; the first
    write of one front end makes its tables only."""
    client = await aiohttp_client(create_app(make_config()))
    bearer = {"Authorization": f"Bearer {node_token}"}
    store: Store = client.app[keys.STORE]
    for path in ("/compat/container-codes/api/health", "/compat/container-codes/api/jobs",
                 "/compat/container-codes/api/proxy/config", "/compat/proxicloud/api/health",
                 "/compat/proxicloud/api/containers"):
        async with client.get(path, headers=bearer) as resp:
            assert resp.status == 200, (path, await resp.text())
    assert await front_end_tables(store) == set()
    async with client.put("/compat/container-codes/api/proxy/config", headers=bearer, json={}) as resp:
        assert resp.status == 200, await resp.text()
    assert await front_end_tables(store) == {"cc_jobs", "cc_proxy_upstreams", "cc_proxy_routes", "cc_settings", "cc_asked_images"}
    assert await namespaces(store) == {"container_codes": 2}


class BrokenStore(ContainerCodesStore):
    NAMESPACE = "broken"
    MIGRATIONS = ("CREATE TABLE broken_a (x INTEGER); CREATE TABLE broken_a (x INTEGER);",)


async def test_a_failed_namespace_migration_leaves_nothing_and_the_connection_usable(tmp_path: Path):
    core = Store(tmp_path / "db.sqlite")
    await core.open()
    try:
        broken = BrokenStore(lambda: core)
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            await broken.ensure()
        assert not core.db.in_transaction and await namespaces(core) == {}
        assert await core.fetchone("SELECT name FROM sqlite_master WHERE name = 'broken_a'") is None
        await core.insert_volume("v1", "/tmp/v1")  # the shared connection still writes
        assert (await core.get_volume("v1"))["path"] == "/tmp/v1"
    finally:
        await core.close()
