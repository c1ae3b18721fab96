"""/volumes over HTTP: every route's happy path, the error shapes, and links planted by a "container"."""

from __future__ import annotations

import base64
import io
import os
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

from lightd import keys
from lightd.app import create_app
from tests.conftest import Api
from tests.volumes.helpers import make_outside, plant_links, snapshot


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return make_outside(tmp_path / "outside")


@pytest.fixture
async def planted(api: Api, outside: Path):
    """A volume holding a.txt, dir/inner.txt and links to `outside`; fails if `outside` changes."""
    volume_id, path = await new_volume(api)
    (path / "a.txt").write_text("hello")
    (path / "dir").mkdir()
    (path / "dir" / "inner.txt").write_text("inner")
    plant_links(path, outside)
    before = snapshot(outside)
    yield volume_id, path
    assert snapshot(outside) == before


async def test_volume_lifecycle(api):
    volume_id, path = await new_volume(api)
    assert str(uuid.UUID(volume_id)) == volume_id and path.is_absolute() and path.is_dir()
    assert oct(path.stat().st_mode & 0o777) == "0o755"
    status, body = await api.get("/volumes")
    assert status == 200 and body["count"] == 1 and body["volumes"][0]["volume_id"] == volume_id
    await api.post(f"/volumes/{volume_id}/files", json={"path": "x.txt", "content": "12345"})
    status, body = await api.get(f"/volumes/{volume_id}")
    usage = {"bytes": 5, "files": 1, "directories": 0, "partial": False, "partial_reason": None, "disk_limit": None}
    assert status == 200 and body["usage"] == usage
    status, body = await api.get(f"/volumes/{volume_id}/usage")
    assert status == 200 and body == {"volume_id": volume_id, **usage}
    status, body = await api.delete(f"/volumes/{volume_id}")
    assert status == 200 and body["deleted"]["volume_id"] == volume_id
    assert not path.exists()
    assert (await api.get(f"/volumes/{volume_id}"))[0] == 404


@pytest.mark.parametrize("volume_id", ["not-a-uuid", "..", str(uuid.uuid4()), str(uuid.uuid4()).upper()])
async def test_unknown_or_malformed_volume_is_404(api, volume_id):
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/files"), ("GET", "/usage")):
        status, body = await api.call(method, f"/volumes/{volume_id}{path}")
        assert status == 404 and "error" in body


async def test_file_routes_happy_path(api):
    volume_id, path = await new_volume(api)
    base = f"/volumes/{volume_id}"
    status, body = await api.post(f"{base}/files", json={"path": "cfg/server.yml", "content": "server-port: 25565"})
    assert status == 201 and body == {"path": "cfg/server.yml", "size": 18}
    blob = bytes(range(256)) * 10
    status, _ = await api.post(f"{base}/files", json={"path": "bin.dat", "content": base64.b64encode(blob).decode(),
                                                      "encoding": "base64", "mode": "0600"})
    assert status == 201 and (path / "bin.dat").read_bytes() == blob and oct((path / "bin.dat").stat().st_mode)[-3:] == "600"

    async with api.client.get(f"{base}/files/content", params={"path": "bin.dat"}, headers=api.headers) as resp:
        assert resp.status == 200 and resp.content_type == "application/octet-stream"
        assert resp.content_length == len(blob) and await resp.read() == blob

    status, body = await api.post(f"{base}/folders", json={"path": "plugins/a"})
    assert status == 201 and body == {"path": "plugins/a", "created": True}
    assert (await api.post(f"{base}/folders", json={"path": "plugins/a"}))[0] == 200

    status, body = await api.get(f"{base}/files")
    assert status == 200 and body["path"] == ""
    assert [(e["name"], e["type"]) for e in body["entries"]] == [
        ("cfg", "directory"), ("plugins", "directory"), ("bin.dat", "file")]
    entry = body["entries"][2]
    assert entry["size"] == len(blob) and entry["mode"] == "0600" and entry["modified"].endswith("Z")
    status, body = await api.get(f"{base}/files", params={"path": "cfg"})
    assert [e["name"] for e in body["entries"]] == ["server.yml"]

    status, body = await api.post(f"{base}/copy", json={"source": "cfg", "destination": "cfg-copy"})
    assert status == 201 and body["files"] == 1
    assert (path / "cfg-copy/server.yml").read_text() == "server-port: 25565"
    status, body = await api.post(f"{base}/rename", json={"source": "cfg-copy", "destination": "plugins/cfg"})
    assert status == 200 and (path / "plugins/cfg/server.yml").exists() and not (path / "cfg-copy").exists()

    status, body = await api.delete(f"{base}/files", params={"path": "plugins"})
    assert status == 200 and body == {"path": "plugins", "deleted": "directory"}
    assert (await api.get(f"{base}/files/content", params={"path": "plugins/cfg/server.yml"}))[0] == 404
    assert (await api.delete(f"{base}/files", params={"path": "plugins"}))[0] == 404


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tar.bz2"])
async def test_compress_and_decompress_routes(api, fmt):
    volume_id, path = await new_volume(api)
    base = f"/volumes/{volume_id}"
    await api.post(f"{base}/files", json={"path": "world/level.dat", "content": "level"})
    await api.post(f"{base}/files", json={"path": "world/region/r.0.0.mca", "content": "region"})
    status, body = await api.post(f"{base}/compress", json={"path": "world", "format": fmt})
    assert status == 201 and body["path"] == f"world.{fmt}" and body["files"] == 2, body
    status, body = await api.post(f"{base}/compress", json={"paths": ["world/level.dat"], "format": fmt,
                                                            "destination": "backups/one"})
    assert status == 201 and (path / "backups/one").is_file()
    status, body = await api.post(f"{base}/decompress", json={"path": f"world.{fmt}", "destination": "restore"})
    assert status == 200 and body["files"] == 2 and body["skipped"] == []
    assert (path / "restore/world/region/r.0.0.mca").read_text() == "region"


async def test_bad_paths_are_400(api, planted):
    volume_id, _ = planted
    base = f"/volumes/{volume_id}"
    for bad in ("../x", "a/../../x", "/etc/passwd", "a\x00b", "x" * 300, "a/" * 2100):
        calls = [
            ("POST", "/files", {"json": {"path": bad, "content": "x"}}),
            ("GET", "/files", {"params": {"path": bad}}),
            ("GET", "/files/content", {"params": {"path": bad}}),
            ("DELETE", "/files", {"params": {"path": bad}}),
            ("POST", "/folders", {"json": {"path": bad}}),
            ("POST", "/copy", {"json": {"source": "a.txt", "destination": bad}}),
            ("POST", "/rename", {"json": {"source": bad, "destination": "b"}}),
            ("POST", "/compress", {"json": {"paths": [bad], "format": "zip"}}),
            ("POST", "/decompress", {"json": {"path": bad}}),
        ]
        for method, route, kwargs in calls:
            status, body = await api.call(method, base + route, **kwargs)
            assert status == 400, (method, route, bad, body)
            assert isinstance(body["error"], str) and "path" in body["error"]


async def test_nothing_reaches_through_planted_links(api, planted, outside):
    volume_id, path = planted
    base = f"/volumes/{volume_id}"
    refused = [
        ("POST", "/files", {"json": {"path": "link.txt", "content": "pwned"}}),
        ("POST", "/files", {"json": {"path": "escape/new.txt", "content": "pwned"}}),
        ("POST", "/files", {"json": {"path": "dir/escape/sub/new.txt", "content": "pwned"}}),
        ("GET", "/files/content", {"params": {"path": "link.txt"}}),
        ("GET", "/files/content", {"params": {"path": "escape/sentinel.txt"}}),
        ("GET", "/files", {"params": {"path": "escape"}}),
        ("GET", "/files", {"params": {"path": "dir/escape/sub"}}),
        ("POST", "/folders", {"json": {"path": "escape/newdir"}}),
        ("DELETE", "/files", {"params": {"path": "escape/sentinel.txt"}}),
        ("DELETE", "/files", {"params": {"path": "dir/escape/sub"}}),
        ("POST", "/copy", {"json": {"source": "escape", "destination": "stolen"}}),
        ("POST", "/copy", {"json": {"source": "link.txt", "destination": "stolen.txt"}}),
        ("POST", "/copy", {"json": {"source": "a.txt", "destination": "escape/a.txt"}}),
        ("POST", "/rename", {"json": {"source": "escape/sentinel.txt", "destination": "stolen.txt"}}),
        ("POST", "/rename", {"json": {"source": "a.txt", "destination": "escape/a.txt"}}),
        ("POST", "/compress", {"json": {"paths": ["escape/sentinel.txt"], "format": "zip"}}),
        ("POST", "/compress", {"json": {"paths": ["a.txt"], "format": "zip", "destination": "escape/x.zip"}}),
        ("POST", "/decompress", {"json": {"path": "escape/x.zip"}}),
    ]
    for method, route, kwargs in refused:
        status, body = await api.call(method, base + route, **kwargs)
        assert status == 400 and "symbolic link" in body["error"], (method, route, kwargs, status, body)

    # compressing the whole volume skips the links and never reads through them
    status, body = await api.post(f"{base}/compress", json={"path": "", "format": "tar.gz", "destination": "all.tgz"})
    assert status == 201 and body["skipped_count"] == 3
    with tarfile.open(path / "all.tgz") as tf:
        assert sorted(tf.getnames()) == ["a.txt", "dir", "dir/inner.txt"]
    # copying a folder that holds a link skips the link
    status, body = await api.post(f"{base}/copy", json={"source": "dir", "destination": "dir2"})
    assert status == 201 and body["skipped"] == [{"path": "dir/escape", "reason": "symlink not copied"}]
    # deleting links removes the links only; deleting a folder holding a link never follows it
    for link in ("link.txt", "escape", "dir"):
        status, body = await api.delete(f"{base}/files", params={"path": link})
        assert status == 200
    assert not os.path.lexists(path / "link.txt") and not os.path.lexists(path / "escape")
    assert (outside / "sentinel.txt").read_text() == "do not touch"


async def test_hostile_archive_over_http(api, planted, outside):
    volume_id, path = planted
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("../../../outside/evil.txt", "slip")
        zf.writestr(str(outside / "abs.txt"), "abs")
        link = zipfile.ZipInfo("lnk")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, str(outside))
        zf.writestr("escape/through.txt", "through a planted link")
    (path / "up.zip").write_bytes(buf.getvalue())
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, str(outside / "sentinel.txt")
        tf.addfile(hard)
    (path / "up.tar").write_bytes(tar.getvalue())

    # into the volume root, where the planted links are
    status, body = await api.post(f"/volumes/{volume_id}/decompress", json={"path": "up.zip"})
    assert status == 200 and body["files"] == 1 and body["skipped_count"] == 4, body
    assert "symbolic link" in {s["path"]: s["reason"] for s in body["skipped"]}["escape/through.txt"]
    assert (path / "ok.txt").read_text() == "ok" and not os.path.lexists(path / "lnk")
    status, body = await api.post(f"/volumes/{volume_id}/decompress", json={"path": "up.tar"})
    assert status == 200 and body["skipped"] == [{"path": "hard", "reason": "hardlink entries are not extracted"}]
    assert not os.path.lexists(path / "hard")


async def test_archive_bomb_is_400_and_nothing_remains(aiohttp_client, make_config, auth_headers):
    api = Api(await aiohttp_client(create_app(make_config(volumes={"archive_max_total_bytes": 10000}))), auth_headers)
    volume_id, path = await new_volume(api)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/first.txt", "small")
        zf.writestr("a/b/bomb.bin", b"\0" * 1_000_000)
    (path / "bomb.zip").write_bytes(buf.getvalue())
    before = sorted(str(p) for p in path.rglob("*"))
    status, body = await api.post(f"/volumes/{volume_id}/decompress", json={"path": "bomb.zip", "destination": "out"})
    assert status == 400 and "10000" in body["error"]
    assert sorted(str(p) for p in path.rglob("*")) == before


async def test_write_over_limit_is_413(aiohttp_client, make_config, auth_headers):
    api = Api(await aiohttp_client(create_app(make_config(volumes={"max_write_bytes": 100}))), auth_headers)
    volume_id, path = await new_volume(api)
    status, body = await api.post(f"/volumes/{volume_id}/files", json={"path": "big", "content": "x" * 101})
    assert status == 413 and "error" in body
    big = base64.b64encode(b"x" * 200).decode()
    status, body = await api.post(f"/volumes/{volume_id}/files", json={"path": "big", "content": big, "encoding": "base64"})
    assert status == 413
    assert (await api.post(f"/volumes/{volume_id}/files", json={"path": "ok", "content": "x" * 100}))[0] == 201
    assert not (path / "big").exists()


async def test_bad_bodies_are_400(api):
    volume_id, _ = await new_volume(api)
    base = f"/volumes/{volume_id}"
    cases = [
        ("/files", {"path": "a", "content": "x", "extra": 1}, "extra"),
        ("/files", {"path": "a", "content": "x", "encoding": "latin1"}, "encoding"),
        ("/files", {"path": "a", "content": "!!!", "encoding": "base64"}, "content"),
        ("/files", {"path": "a", "content": "x", "mode": "999"}, "mode"),
        ("/files", {"content": "x"}, "path"),
        ("/compress", {"path": "a", "paths": ["b"]}, "paths"),
        ("/compress", {"path": "a", "format": "rar"}, "format"),
        ("/copy", {"source": "a"}, "destination"),
    ]
    for route, payload, word in cases:
        status, body = await api.post(base + route, json=payload)
        assert status == 400 and word in body["error"], (route, payload, body)


async def test_fifo_is_not_read(api):
    volume_id, path = await new_volume(api)
    os.mkfifo(path / "pipe")
    status, body = await api.get(f"/volumes/{volume_id}/files/content", params={"path": "pipe"})
    assert status == 400 and "regular file" in body["error"]


async def test_delete_volume_in_use_is_409(api, client):
    volume_id, path = await new_volume(api)
    await client.app[keys.STORE].insert_container("srv-1", volume_id, {"image": "x"}, "ready")
    status, body = await api.delete(f"/volumes/{volume_id}")
    assert status == 409 and "srv-1" in body["error"]
    assert path.is_dir() and (await api.get(f"/volumes/{volume_id}"))[0] == 200


async def test_volumes_survive_a_restart(aiohttp_client, config, auth_headers):
    first = await aiohttp_client(create_app(config))
    volume_id, path = await new_volume(Api(first, auth_headers))
    await Api(first, auth_headers).post(f"/volumes/{volume_id}/files", json={"path": "keep.txt", "content": "kept"})
    await first.close()
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    status, body = await api.get("/volumes")
    assert [v["volume_id"] for v in body["volumes"]] == [volume_id]
    status, body = await api.get(f"/volumes/{volume_id}/files/content", params={"path": "keep.txt"})
    assert status == 200 and body == b"kept"
