"""Local backups over the native API, against the real engine: create, list, get, delete, restore (with and
without truncate), the server states around a restore, ignore patterns, planted links, max_local_bytes."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from lightd import keys
from tests.backups.helpers import archive_names, backup, read_tree, restore, server_with_files, wait_backup, write_tree
from tests.servers.helpers import EventLog, wait_state

pytestmark = pytest.mark.docker

FILES = {"server.properties": "motd=hello\n", "world/level.dat": b"\x00\x01level", "world/region/r.0.0.mca": os.urandom(70_000),
         "logs/latest.log": "log line\n"}


def local_archive(config, internal_id: str, backup_id: str) -> Path:
    return config.backups_dir / internal_id / f"{backup_id}.tar.zst"


async def test_create_list_get_delete(dapi, dclient, docker_config):
    await server_with_files(dapi, "bk-crud", FILES)
    events = EventLog(dclient.app, "bk-crud")
    view = await backup(dapi, "bk-crud", name="nightly")
    assert view["name"] == "nightly" and view["adapter"] == "local" and view["compression"] == "zstd"
    assert view["files"] == 4 and view["skipped_count"] == 0 and view["error"] is None
    path = local_archive(docker_config, "bk-crud", view["backup_id"])
    data = path.read_bytes()
    assert view["size"] == len(data) and view["sha256"] == hashlib.sha256(data).hexdigest()
    # outside every volume, reachable by root only
    assert stat.S_IMODE(os.stat(docker_config.backups_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    types = [e["type"] for e in events.of("event")]
    assert types[0] == "backup_started" and types[-1] == "backup_completed", types
    completed = events.of("event")[-1]
    assert completed == {"type": "backup_completed", "backup_id": view["backup_id"], "size": view["size"], "sha256": view["sha256"]}

    second = await backup(dapi, "bk-crud", compression="gzip")
    assert (docker_config.backups_dir / "bk-crud" / f"{second['backup_id']}.tar.gz").read_bytes()[:2] == b"\x1f\x8b"
    code, listing = await dapi.get("/containers/bk-crud/backups")
    assert code == 200 and listing["count"] == 2
    assert [b["backup_id"] for b in listing["backups"]] == [view["backup_id"], second["backup_id"]]

    code, deleted = await dapi.delete(f"/containers/bk-crud/backups/{view['backup_id']}")
    assert code == 200 and deleted["deleted"]["backup_id"] == view["backup_id"]
    assert not path.exists()
    code, body = await dapi.get(f"/containers/bk-crud/backups/{view['backup_id']}")
    assert code == 404 and body["code"] == "not_found"
    code, body = await dapi.get("/containers/nosuch/backups")
    assert code == 404
    code, body = await dapi.post("/containers/bk-crud/backups", json={"adapter": "ftp"})
    assert code == 400 and body["code"] == "validation_failed"
    code, body = await dapi.post("/containers/bk-crud/backups", json={"adapter": "s3"})
    assert code == 400 and "not configured" in body["error"]

    # deleting the server deletes its local backups
    assert (docker_config.backups_dir / "bk-crud").exists()
    code, _ = await dapi.delete("/containers/bk-crud")
    assert code == 200
    assert not (docker_config.backups_dir / "bk-crud").exists()


async def test_restore_with_and_without_truncate(dapi, dclient):
    root = await server_with_files(dapi, "bk-rest", FILES)
    original = read_tree(root)
    events = EventLog(dclient.app, "bk-rest")
    view = await backup(dapi, "bk-rest")
    write_tree(root, {"server.properties": "motd=changed\n", "new-file.txt": "made after the backup"})
    (root / "world" / "level.dat").unlink()

    await restore(dapi, "bk-rest", view["backup_id"], truncate=False)
    now = read_tree(root)
    assert now == {**original, "new-file.txt": b"made after the backup"}
    assert (await wait_state(dapi, "bk-rest", "offline"))["state"] == "offline"

    await restore(dapi, "bk-rest", view["backup_id"], truncate=True)
    assert read_tree(root) == original
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755  # the volume folder keeps its mode (containers enter it)
    types = events.types()
    assert types.count("restoring") == 2 and types.count("restore_completed") == 2, types
    assert "offline" in types[types.index("restoring"):]
    _, got = await dapi.get(f"/containers/bk-rest/backups/{view['backup_id']}")
    assert got["restore_status"] == "completed" and got["restored_at"] is not None
    # the server starts on the restored volume
    assert (await dapi.post("/containers/bk-rest/start"))[0] == 202
    await wait_state(dapi, "bk-rest", "running")


async def test_restore_refused_while_running_and_restoring_blocks_power(dapi, dclient, docker_config):
    root = await server_with_files(dapi, "bk-run", {"a.txt": "a"})
    view = await backup(dapi, "bk-run")
    assert (await dapi.post("/containers/bk-run/start"))[0] == 202
    await wait_state(dapi, "bk-run", "running")
    code, body = await dapi.post(f"/containers/bk-run/backups/{view['backup_id']}/restore", json={"truncate": True})
    assert code == 409 and "offline" in body["error"]
    await dapi.post("/containers/bk-run/kill")
    await wait_state(dapi, "bk-run", "offline")

    # Hold the restore in `restoring`: the node's only slot is taken by a slow (rate-limited) backup.
    service = dclient.app[keys.BACKUPS]
    service.config = service.config.model_copy(update={"max_running": 1})
    service._slots = type(service._slots)(1)  # noqa: SLF001 - the test narrows the node to one job
    service.config = service.config.model_copy(update={"write_limit_mib_s": 0.5})
    other = await server_with_files(dapi, "bk-slow", {"big.bin": os.urandom(3 * 1024 * 1024)})
    assert other.exists()
    _, slow = await dapi.post("/containers/bk-slow/backups", json={})
    code, answer = await dapi.post(f"/containers/bk-run/backups/{view['backup_id']}/restore", json={"truncate": True})
    assert code == 202, answer
    _, server = await dapi.get("/containers/bk-run")
    assert server["state"] == "restoring"
    for action in ("start", "stop", "restart", "kill"):
        code, body = await dapi.post(f"/containers/bk-run/{action}")
        assert code == 409, (action, body)
    code, body = await dapi.post(f"/containers/bk-run/backups/{view['backup_id']}/restore", json={})
    assert code == 409
    code, body = await dapi.delete(f"/containers/bk-run/backups/{view['backup_id']}")
    assert code == 409
    await wait_backup(dapi, "bk-slow", slow["backup_id"], "completed", timeout=60)
    await wait_state(dapi, "bk-run", "offline", timeout=30)
    assert (root / "a.txt").read_text() == "a"


async def test_ignore_patterns_and_lightdignore(dapi, docker_config):
    await server_with_files(dapi, "bk-ign", {
        ".lightdignore": "# tenant's list\n*.log\n!keep.log\ncache/\n", "a.log": "x", "sub/keep.log": "k",
        "cache/big.bin": "c", "sub/cache/deep": "c", "plugins/x.jar": "j", "plugins/tmp/t": "t", "README": "r"})
    view = await backup(dapi, "bk-ign", ignore=["/plugins/tmp/", "README"])
    names = archive_names(local_archive(docker_config, "bk-ign", view["backup_id"]))
    assert sorted(n for n in names if not n.endswith("/")) == [".lightdignore", "plugins/x.jar", "sub/keep.log"], names
    code, body = await dapi.post("/containers/bk-ign/backups", json={"ignore": ["x" * 2000]})
    assert code == 400


async def test_planted_links_are_never_followed(dapi, docker_config, tmp_path):
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("host secret")
    root = await server_with_files(dapi, "bk-link", {"real.txt": "real", "dir/inner.txt": "inner"})
    os.symlink("/etc", root / "etc-link")
    os.symlink(str(outside), root / "dir" / "secret-link")
    os.symlink("/etc", root / "linked-dir")
    os.mkfifo(root / "pipe")
    view = await backup(dapi, "bk-link", ignore=[])
    names = archive_names(local_archive(docker_config, "bk-link", view["backup_id"]))
    assert sorted(names) == ["dir/", "dir/inner.txt", "real.txt"], names
    assert view["skipped_count"] == 4
    # a restore leaves the volume's own links as they were when not truncating, and removes them when truncating
    await restore(dapi, "bk-link", view["backup_id"], truncate=False)
    assert os.readlink(root / "etc-link") == "/etc"
    await restore(dapi, "bk-link", view["backup_id"], truncate=True)
    assert not os.path.lexists(root / "etc-link") and outside.read_text() == "host secret"
    assert os.listdir("/etc")  # untouched


def hostile_archive(kind: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        good = tarfile.TarInfo("good.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo({"dotdot": "../escaped.txt", "absolute": "/tmp/lightd-abs.txt"}.get(kind, "evil-link"))
        if kind in ("symlink", "abslink"):
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc" if kind == "abslink" else "../../.."
            tar.addfile(bad)
        else:
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "abslink"])
async def test_a_hostile_archive_is_refused_and_the_volume_stays(dapi, dclient, docker_config, kind):
    internal_id = f"bk-hostile-{kind}"
    root = await server_with_files(dapi, internal_id, {"keep.txt": "kept"})
    view = await backup(dapi, internal_id)
    path = local_archive(docker_config, internal_id, view["backup_id"])
    data = hostile_archive(kind)
    path.write_bytes(data)  # whoever could write there (root) or an S3 bucket's other writers
    await dclient.app[keys.BACKUPS].store.update(view["backup_id"], sha256=hashlib.sha256(data).hexdigest())
    got = await restore(dapi, internal_id, view["backup_id"], status="failed", truncate=True)
    assert got["restore_error"], got
    assert read_tree(root) == {"keep.txt": b"kept"}
    assert not (root.parent / "escaped.txt").exists() and not Path("/tmp/lightd-abs.txt").exists()
    assert not list((docker_config.backups_dir / ".restores").iterdir())


async def test_a_damaged_archive_fails_its_restore(dapi, docker_config):
    root = await server_with_files(dapi, "bk-dmg", {"keep.txt": "kept"})
    view = await backup(dapi, "bk-dmg")
    path = local_archive(docker_config, "bk-dmg", view["backup_id"])
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    got = await restore(dapi, "bk-dmg", view["backup_id"], status="failed", truncate=True)
    assert "sha256" in got["restore_error"] or "cannot be read" in got["restore_error"]
    assert read_tree(root) == {"keep.txt": b"kept"}


async def test_max_local_bytes(make_config, container_prefix, aiohttp_client, auth_headers):
    from lightd.app import create_app
    from tests.conftest import Api

    config = make_config(docker={"container_prefix": container_prefix}, backups={"max_local_bytes": 300_000})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    await server_with_files(api, "bk-max", {"a.bin": os.urandom(200_000)})
    first = await backup(api, "bk-max")
    assert first["size"] > 200_000
    failed = await backup(api, "bk-max", status="failed")
    assert "max_local_bytes" in failed["error"]
    assert not list((config.backups_dir / "bk-max").glob("*.part"))
    assert [p.name for p in (config.backups_dir / "bk-max").iterdir()] == [f"{first['backup_id']}.tar.zst"]
    await api.delete(f"/containers/bk-max/backups/{failed['backup_id']}")
    # at the limit already: refused at once
    service = api.client.app[keys.BACKUPS]
    service.config = service.config.model_copy(update={"max_local_bytes": 100_000})
    code, body = await api.post("/containers/bk-max/backups", json={})
    assert code == 409 and body["code"] == "backup_quota_exceeded", body
