"""File search (glob/substring, depth, cap, skipped folders, links), selection downloads as tar.gz / zip made
on the fly, and the listing entry's fields — over HTTP against the real app."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tarfile
import threading
import traceback
import zipfile
from pathlib import Path

import pytest

from lightd.app import create_app
from lightd.volumes.search import NameMatcher
from tests.conftest import Api


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


def tree(root: Path) -> None:
    for rel in ("server.yml", "config/Server.YML", "config/ops.json", "node_modules/x/server.yml",
                ".git/server.yml", "plugins/a/b/c/d/e/f/g/deep8.yml", "plugins/a/b/c/d/e/f/g/h/deep9.yml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


async def test_search_by_glob_and_substring_skips_vendored_folders_and_stops_at_depth(api, tmp_path):
    volume_id, path = await new_volume(api)
    tree(path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "server.yml").write_text("host")
    os.symlink(outside, path / "linked")
    url = f"/volumes/{volume_id}/files/search"
    status, body = await api.get(url, params={"pattern": "*.yml"})
    assert status == 200, body
    found = sorted(r["path"] for r in body["results"])
    assert found == ["config/Server.YML", "plugins/a/b/c/d/e/f/g/deep8.yml", "server.yml"]
    assert body["truncated"] is False and body["pattern"] == "*.yml"
    status, body = await api.get(url, params={"pattern": "ops", "directory": "config"})
    assert [r["path"] for r in body["results"]] == ["config/ops.json"]
    assert body["results"][0]["is_file"] and body["results"][0]["mime"] == "application/json"
    status, body = await api.get(url, params={"pattern": "link"})
    assert [(r["path"], r["is_symlink"]) for r in body["results"]] == [("linked", True)]  # reported, not entered
    for params in ({"pattern": "x", "directory": "../"}, {"pattern": "x", "directory": "/etc"},
                   {"pattern": "x", "directory": "linked"}, {"pattern": ""}, {"pattern": "a/b"},
                   {"pattern": "x" * 200}, {"directory": "config"}, {"pattern": "x", "depth": "3"}):
        status, body = await api.get(url, params=params)
        assert status == 400, (params, body)
    status, body = await api.get(url, params={"pattern": "x", "directory": "missing"})
    assert status == 404


async def test_search_result_cap_and_hostile_patterns(aiohttp_client, make_config, auth_headers, no_blocking_calls):
    api = Api(await aiohttp_client(create_app(make_config(volumes={"search_max_results": 5}))), auth_headers)
    volume_id, path = await new_volume(api)
    for i in range(20):
        (path / f"log-{i}.txt").write_text("x")
    (path / ("a" * 250)).write_text("x")
    status, body = await api.get(f"/volumes/{volume_id}/files/search", params={"pattern": "log-*"})
    assert status == 200 and len(body["results"]) == 5 and body["truncated"] is True
    # a pattern built to backtrack: linear-time matching answers at once
    status, body = await api.get(f"/volumes/{volume_id}/files/search", params={"pattern": "*a" * 60 + "*b"})
    assert status == 200 and body["results"] == []


@pytest.mark.parametrize(("pattern", "name", "hit"), [
    ("*.JAR", "plugin.jar", True), ("level?.dat", "level1.dat", True), ("level?.dat", "level10.dat", False),
    ("[ab]*", "beta", True), ("[!ab]*", "beta", False), ("[a-c]x", "Bx", True), ("world", "My_World_nether", True),
    ("[", "[", True), ("[", "a[b", False), ("*[*", "a[b", True), ("*", "", True)])
def test_name_matcher(pattern, name, hit):
    assert NameMatcher(pattern)(name) is hit


def archiving() -> list[str]:
    """Threads inside the archive writer now."""
    frames = sys._current_frames()
    return [t.name for t in threading.enumerate()
            if t.ident in frames and "_write_archive" in "".join(traceback.format_stack(frames[t.ident]))]


def selection(path: Path, outside: Path) -> None:
    (path / "world" / "region").mkdir(parents=True)
    (path / "world" / "level.dat").write_bytes(b"L" * 5000)
    (path / "world" / "region" / "r.0.0.mca").write_bytes(os.urandom(70_000))
    (path / "server.properties").write_text("motd=hi")
    (path / "other.txt").write_text("not selected")
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    os.symlink(outside, path / "world" / "escape")
    os.symlink("/etc/passwd", path / "world" / "passwd")
    os.mkfifo(path / "world" / "fifo")


async def download(api: Api, volume_id: str, query: str) -> tuple[int, bytes, dict]:
    async with api.client.get(f"/volumes/{volume_id}/files/archive?{query}", headers=api.headers) as resp:
        return resp.status, await resp.read(), resp.headers.copy()


async def test_archive_download_holds_exactly_the_selection(api, tmp_path):
    volume_id, path = await new_volume(api)
    selection(path, tmp_path / "outside")
    expected = {"world/level.dat": b"L" * 5000, "world/region/r.0.0.mca": (path / "world/region/r.0.0.mca").read_bytes(),
                "server.properties": b"motd=hi"}
    status, body, headers = await download(api, volume_id, "paths=world&paths=server.properties")
    assert status == 200 and headers["Content-Type"] == "application/gzip", body[:200]
    assert "files.tar.gz" in headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {"world", "world/region", *expected}
        for name, data in expected.items():
            assert tf.extractfile(members[name]).read() == data
    status, body, headers = await download(api, volume_id, "paths=world&format=zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert "world.zip" in headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        assert set(zf.namelist()) == {"world/", "world/region/", "world/level.dat", "world/region/r.0.0.mca"}
        assert zf.read("world/region/r.0.0.mca") == expected["world/region/r.0.0.mca"]
    status, body, _ = await download(api, volume_id, "paths=server.properties&format=zip")
    assert zipfile.ZipFile(io.BytesIO(body)).namelist() == ["server.properties"]


async def test_archive_download_refuses_bad_selections_before_sending(api, tmp_path):
    volume_id, path = await new_volume(api)
    selection(path, tmp_path / "outside")
    for query in ("paths=../etc", "paths=%2Fetc%2Fpasswd", "paths=..%2F..%2Fetc", "paths=world/escape/secret.txt",
                  "paths=world&format=rar", "format=zip", "paths=world&other=1", "paths=a%00b"):
        status, body, _ = await download(api, volume_id, query)
        assert status == 400, (query, body[:200])
    status, body, _ = await download(api, volume_id, "paths=world&paths=missing")
    assert status == 404
    for link in ("world/passwd", "world/escape"):  # a link selected itself is left out, as compress does
        status, body, _ = await download(api, volume_id, f"paths={link}&format=zip")
        assert status == 200 and zipfile.ZipFile(io.BytesIO(body)).namelist() == []


async def test_listing_entries_carry_the_file_manager_fields(api):
    volume_id, path = await new_volume(api)
    (path / "dir").mkdir()
    (path / "notes.txt").write_text("hi")
    os.chmod(path / "notes.txt", 0o640)
    os.symlink("/etc/passwd", path / "link")
    status, body = await api.get(f"/volumes/{volume_id}/files")
    assert status == 200
    entries = {e["name"]: e for e in body["entries"]}
    notes = entries["notes.txt"]
    assert notes["mode"] == "0640" and notes["mode_bits"] == 0o640 and notes["type"] == "file"
    assert (notes["is_file"], notes["is_dir"], notes["is_symlink"]) == (True, False, False)
    assert notes["mime"] == "text/plain" and notes["modified"].endswith("Z") and notes["size"] == 2
    assert entries["dir"]["is_dir"] and entries["dir"]["mime"] == "inode/directory"
    assert entries["link"]["is_symlink"] and entries["link"]["mime"] == "inode/symlink"
    assert not entries["link"]["is_file"]


async def test_a_client_leaving_mid_archive_stops_the_archiver(api):
    """Bounded memory: the archiving thread waits for the client; when the client goes, it stops (no thread
    left blocked, nothing written to the volume)."""
    volume_id, path = await new_volume(api)
    (path / "big").mkdir()
    for i in range(4):
        (path / "big" / f"{i}.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    before = sorted(p.name for p in path.rglob("*"))
    async with api.client.get(f"/volumes/{volume_id}/files/archive?paths=big&format=zip", headers=api.headers) as resp:
        assert resp.status == 200
        await resp.content.readexactly(512 * 1024)
        resp.close()  # the client goes away with most of the archive unsent
    for _ in range(100):
        if not archiving():
            break
        await asyncio.sleep(0.05)
    assert not archiving(), "the archiving thread did not stop"
    assert sorted(p.name for p in path.rglob("*")) == before
    status, _ = await api.get(f"/volumes/{volume_id}/files")
    assert status == 200
