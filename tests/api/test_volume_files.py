"""The file manager's transfers over HTTP against the real app: content with Range / ETag / If-None-Match,
multipart uploads (size cap, disk limit mid-file, no partial file), batch delete and chmod — each with the
hostile inputs a tenant can bring (traversal, planted links, FIFOs, devices, files changing while served)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lightd import keys
from lightd.app import create_app
from lightd.volumes.sandbox import TEMP_PREFIX
from lightd.volumes.transfer import Conditions, byte_range, open_content
from tests.conftest import Api

DATA = bytes(range(256)) * 40  # 10240 bytes


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


def plant_links(volume: Path, outside: Path) -> None:
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("host secret")
    os.symlink("/etc/passwd", volume / "passwd")
    os.symlink(outside, volume / "outdir")
    os.symlink("loop", volume / "loop")
    os.symlink(outside / "secret.txt", volume / "secret")


def leftovers(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob(f"{TEMP_PREFIX}*"))


async def content(api: Api, volume_id: str, path: str, **headers: str) -> tuple[int, Any, Any]:
    async with api.client.get(f"/volumes/{volume_id}/files/content", params={"path": path},
                              headers={**api.headers, **headers}) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body, resp.headers.copy()


# -- content ---------------------------------------------------------------------------------------------
async def test_content_has_validators_and_serves_ranges(api):
    volume_id, path = await new_volume(api)
    (path / "data.bin").write_bytes(DATA)
    status, body, headers = await content(api, volume_id, "data.bin")
    assert status == 200 and body == DATA
    assert headers["Content-Length"] == str(len(DATA)) and headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"') and headers["Last-Modified"].endswith("GMT")
    assert headers["Content-Type"] == "application/octet-stream" and "attachment" in headers["Content-Disposition"]
    etag = headers["ETag"]
    cases = {"bytes=0-99": (0, 100), "bytes=100-": (100, len(DATA)), "bytes=-50": (len(DATA) - 50, len(DATA)),
             "bytes=10000-99999": (10000, len(DATA)), "bytes=-99999": (0, len(DATA)), "bytes=5-5": (5, 6)}
    for header, (start, end) in cases.items():
        status, body, got = await content(api, volume_id, "data.bin", Range=header)
        assert status == 206, (header, status)
        assert body == DATA[start:end], header
        assert got["Content-Range"] == f"bytes {start}-{end - 1}/{len(DATA)}", header
        assert got["Content-Length"] == str(end - start)
    # several ranges, malformed ones and other units: the whole file (documented), never a 5xx
    for header in ("bytes=0-1,5-6", "bytes=abc", "bytes=9-3", "items=0-1", "bytes=" + "9" * 40 + "-"):
        status, body, _ = await content(api, volume_id, "data.bin", Range=header)
        assert status == 200 and body == DATA, header
    for header in ("bytes=10240-", "bytes=99999-100000", "bytes=-0"):
        status, body, got = await content(api, volume_id, "data.bin", Range=header)
        assert status == 416 and body["code"] == "range_not_satisfiable", header
        assert got["Content-Range"] == f"bytes */{len(DATA)}"
    # If-None-Match: 304 with the current tag (also in a list, or weak), 200 with another
    for header in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        status, body, got = await content(api, volume_id, "data.bin", **{"If-None-Match": header})
        assert status == 304 and body == b"" and got["ETag"] == etag, header
    status, body, _ = await content(api, volume_id, "data.bin", **{"If-None-Match": '"other"'})
    assert status == 200 and body == DATA
    # If-Range: the range only while the file is the version the client has
    status, body, _ = await content(api, volume_id, "data.bin", Range="bytes=0-9", **{"If-Range": etag})
    assert status == 206 and body == DATA[:10]
    status, body, _ = await content(api, volume_id, "data.bin", Range="bytes=0-9", **{"If-Range": '"old"'})
    assert status == 200 and body == DATA
    (path / "data.bin").write_bytes(DATA[::-1])  # rewritten: a new tag
    status, body, got = await content(api, volume_id, "data.bin", **{"If-None-Match": etag})
    assert status == 200 and body == DATA[::-1] and got["ETag"] != etag
    (path / "empty").write_bytes(b"")
    status, body, _ = await content(api, volume_id, "empty")
    assert status == 200 and body == b""
    status, body, _ = await content(api, volume_id, "empty", Range="bytes=0-")
    assert status == 416


async def test_content_refuses_traversal_links_fifos_devices_and_folders(api, tmp_path):
    volume_id, path = await new_volume(api)
    plant_links(path, tmp_path / "outside")
    os.mkfifo(path / "fifo")
    (path / "folder").mkdir()
    for name in ("passwd", "secret", "outdir/secret.txt", "loop", "fifo", "folder", "../x", "/etc/passwd",
                 "folder/../../x"):
        status, body, _ = await content(api, volume_id, name)
        assert 400 <= status < 500 and status != 404 and body["code"] in ("path_not_allowed", "bad_request"), (name, body)
    async with api.client.get(f"/volumes/{volume_id}/files/content?path=..%2F..%2Fetc%2Fpasswd",
                              headers=api.headers) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == "path_not_allowed"
    status, body, _ = await content(api, volume_id, "missing.txt")
    assert status == 404


async def test_content_refuses_a_device(api):
    volume_id, path = await new_volume(api)
    try:
        os.mknod(path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    status, body, _ = await content(api, volume_id, "null")
    assert status == 400 and body["code"] == "bad_request"


async def test_a_file_that_shrinks_while_served_ends_the_stream_short(api):
    """Hostile tenant: a file truncated after open. The body is read at most to the size seen at open and the
    connection is dropped: never a short body presented as whole, never bytes past the first size."""
    volume_id, path = await new_volume(api)
    (path / "big.bin").write_bytes(b"x" * (8 * 1024 * 1024))
    service = api.client.app[keys.VOLUMES]
    opened = await open_content(service, volume_id, "big.bin")
    os.truncate(path / "big.bin", 1024 * 1024)
    got = b"".join([chunk async for chunk in opened.chunks()])
    opened.close()
    assert len(got) == 1024 * 1024 and not opened.complete
    opened = await open_content(service, volume_id, "big.bin", Conditions(range="bytes=-10"))
    assert (opened.status, opened.offset, opened.length) == (206, 1024 * 1024 - 10, 10)
    opened.close()
    # over HTTP: the truncate happens once the headers are out; the client sees an incomplete body
    (path / "big.bin").write_bytes(b"y" * (64 * 1024 * 1024))
    async with api.client.get(f"/volumes/{volume_id}/files/content", params={"path": "big.bin"},
                              headers=api.headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(64 * 1024 * 1024)
        os.truncate(path / "big.bin", 1024)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


def test_byte_range_parser_edges():
    assert byte_range("bytes=0-0", 1) == (0, 1)
    assert byte_range("BYTES = 2-", 10) == (2, 8)
    assert byte_range("bytes=-3", 2) == (0, 2)
    assert byte_range("bytes=0-1, 3-4", 10) is None
    assert byte_range("bytes=²-3", 10) is None


# -- upload ----------------------------------------------------------------------------------------------
def form(*files: tuple[str, bytes], field: str = "files") -> aiohttp.FormData:
    data = aiohttp.FormData(quote_fields=False)  # as browsers send names (aiohttp's client %-encodes them)
    for name, payload in files:
        data.add_field(field, payload, filename=name, content_type="application/octet-stream")
    return data


async def test_upload_of_several_files_streams_them_into_place(api):
    volume_id, path = await new_volume(api)
    big = os.urandom(3 * 1024 * 1024 + 17)
    status, body = await api.post(f"/volumes/{volume_id}/files/upload", params={"directory": "plugins/new"},
                                  data=form(("a.jar", big), ("C:\\Users\\me\\b.txt", b"bee"), ("dir/c.txt", b"")))
    assert status == 201, body
    assert body == {"directory": "plugins/new", "files": [{"path": "plugins/new/a.jar", "size": len(big)},
                                                          {"path": "plugins/new/b.txt", "size": 3},
                                                          {"path": "plugins/new/c.txt", "size": 0}]}
    assert (path / "plugins/new/a.jar").read_bytes() == big and (path / "plugins/new/b.txt").read_bytes() == b"bee"
    assert stat.S_IMODE((path / "plugins/new/a.jar").stat().st_mode) == 0o644
    # a second upload replaces a regular file, keeping its mode
    os.chmod(path / "plugins/new/b.txt", 0o600)
    status, body = await api.post(f"/volumes/{volume_id}/files/upload", params={"directory": "plugins/new"},
                                  data=form(("b.txt", b"new")))
    assert status == 201 and (path / "plugins/new/b.txt").read_bytes() == b"new"
    assert stat.S_IMODE((path / "plugins/new/b.txt").stat().st_mode) == 0o600
    assert leftovers(path) == []


async def test_upload_refuses_bad_names_links_and_bodies(api, tmp_path):
    volume_id, path = await new_volume(api)
    plant_links(path, tmp_path / "outside")
    url = f"/volumes/{volume_id}/files/upload"
    for directory in ("../x", "/etc", "outdir", "passwd", "loop", "outdir/sub"):
        status, body = await api.post(url, params={"directory": directory}, data=form(("x.txt", b"x")))
        assert status == 400, (directory, body)
    for name in ("..", ".", TEMP_PREFIX + "x", "secret", "passwd"):
        status, body = await api.post(url, data=form((name, b"pwned")))
        assert status == 400, (name, body)
    status, body = await api.post(url, data=form(("dup.txt", b"1"), ("dup.txt", b"2")))
    assert status == 400 and body["code"] == "validation_failed"
    status, body = await api.post(url, json={"path": "x"})
    assert status == 400 and body["code"] == "validation_failed"
    data = aiohttp.FormData()
    data.add_field("note", "not a file")
    status, body = await api.post(url, data=data)
    assert status == 400
    status, body = await api.post(url, data=b"--nope\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=nope"})
    assert 400 <= status < 500
    assert (tmp_path / "outside" / "secret.txt").read_text() == "host secret"
    assert not (tmp_path / "outside" / "x.txt").exists() and os.readlink(path / "passwd") == "/etc/passwd"
    assert leftovers(path) == [] and (path / "dup.txt").read_bytes() == b"1"  # the first, completed, stays


async def test_upload_over_max_upload_bytes_or_file_count_is_413_with_nothing_left(aiohttp_client, make_config,
                                                                                  auth_headers, no_blocking_calls):
    config = make_config(volumes={"max_upload_bytes": 1024 * 1024, "max_upload_files": 2})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    volume_id, path = await new_volume(api)
    url = f"/volumes/{volume_id}/files/upload"
    status, body = await api.post(url, data=form(("ok.bin", b"o" * 1000), ("big.bin", b"b" * (1024 * 1024 + 1))))
    assert status == 413 and body["code"] == "payload_too_large", body
    assert not (path / "big.bin").exists() and leftovers(path) == []
    assert (path / "ok.bin").stat().st_size == 1000  # completed before the failure: kept
    status, body = await api.post(url, data=form(("1", b"1"), ("2", b"2"), ("3", b"3")))
    assert status == 413 and not (path / "3").exists()
    # a declared length past what the route can take is refused before the body is read
    status, body = await api.post(url, data=b"x", headers={"Content-Length": str(3 * 1024 * 1024 * 1024),
                                                          "Content-Type": "multipart/form-data; boundary=b"})
    assert status == 413


async def test_a_quota_hit_mid_upload_leaves_no_partial_file(api):
    volume_id, path = await new_volume(api)
    (path / "keep.bin").write_bytes(b"k" * 1000)
    service = api.client.app[keys.VOLUMES]
    service.set_disk_limit(volume_id, 1000 + 2 * 1024 * 1024)
    (path / "victim.bin").write_bytes(b"old")
    status, body = await api.post(f"/volumes/{volume_id}/files/upload",
                                  data=form(("victim.bin", os.urandom(5 * 1024 * 1024))))
    assert status == 409 and body["code"] == "disk_quota_exceeded", body
    assert (path / "victim.bin").read_bytes() == b"old" and leftovers(path) == []
    # the budget was given back: a file that fits still goes in
    status, body = await api.post(f"/volumes/{volume_id}/files/upload", data=form(("fits.bin", b"f" * 1024 * 1024)))
    assert status == 201, body


async def test_a_client_gone_mid_upload_leaves_no_temp_file(api):
    volume_id, path = await new_volume(api)
    boundary = "lightdtest"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"cut.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    host, port = api.client.host, api.client.port
    _, writer = await asyncio.open_connection(host, port)
    request = (f"POST /volumes/{volume_id}/files/upload HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: {api.headers['Authorization']}\r\nAccept: {api.headers['Accept']}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 99999999\r\n\r\n").encode()
    writer.write(request + head + b"z" * (3 * 1024 * 1024))
    await writer.drain()
    for _ in range(100):
        if leftovers(path):
            break
        await asyncio.sleep(0.05)
    writer.close()
    for _ in range(100):
        if not leftovers(path):
            break
        await asyncio.sleep(0.05)
    assert leftovers(path) == [] and not (path / "cut.bin").exists()


# -- delete and chmod ------------------------------------------------------------------------------------
async def test_batch_delete_removes_links_not_targets_and_never_the_root(api, tmp_path):
    volume_id, path = await new_volume(api)
    plant_links(path, tmp_path / "outside")
    (path / "cfg").mkdir()
    (path / "cfg" / "a.txt").write_text("a")
    (path / "cfg" / "tree" / "deep").mkdir(parents=True)
    (path / "cfg" / "tree" / "deep" / "x").write_text("x")
    os.symlink(path / "cfg" / "a.txt", path / "cfg" / "link-to-a")
    url = f"/volumes/{volume_id}/files/delete"
    status, body = await api.post(url, json={"root": "cfg", "files": ["link-to-a", "tree", "missing"]})
    assert status == 200, body
    assert body == {"root": "cfg", "deleted": [{"path": "cfg/link-to-a", "deleted": "symlink"},
                                               {"path": "cfg/tree", "deleted": "directory"}], "not_found": ["cfg/missing"]}
    assert (path / "cfg" / "a.txt").read_text() == "a"
    status, body = await api.post(url, json={"files": ["passwd", "outdir", "secret", "loop"]})
    assert status == 200 and [d["deleted"] for d in body["deleted"]] == ["symlink"] * 4
    assert Path("/etc/passwd").exists() and (tmp_path / "outside" / "secret.txt").read_text() == "host secret"
    for bad in ({"root": "", "files": [""]}, {"root": "cfg", "files": ["."]}, {"root": "cfg", "files": ["/"]},
                {"root": "cfg", "files": ["a.txt", "../cfg"]}, {"root": "../", "files": ["x"]},
                {"root": "/etc", "files": ["passwd"]}, {"files": []}, {"files": ["a"], "extra": 1}):
        status, body = await api.post(url, json=bad)
        assert status == 400, (bad, body)
    assert (path / "cfg" / "a.txt").exists()  # a batch with one bad name changes nothing
    (path / "outlink").symlink_to(tmp_path / "outside")
    status, body = await api.post(url, json={"root": "outlink", "files": ["secret.txt"]})
    assert status == 400 and (tmp_path / "outside" / "secret.txt").exists()


async def test_batch_chmod_sets_modes_refuses_setuid_and_never_follows_links(api, tmp_path):
    volume_id, path = await new_volume(api)
    plant_links(path, tmp_path / "outside")
    (path / "run.sh").write_text("#!/bin/sh")
    (path / "bin").mkdir()
    outside_mode = stat.S_IMODE((tmp_path / "outside" / "secret.txt").stat().st_mode)
    url = f"/volumes/{volume_id}/files/chmod"
    status, body = await api.post(url, json={"files": [{"file": "run.sh", "mode": "0755"}, {"file": "bin", "mode": "700"}]})
    assert status == 200 and body == {"root": "", "files": [{"path": "run.sh", "mode": "0755"},
                                                            {"path": "bin", "mode": "0700"}]}
    assert stat.S_IMODE((path / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((path / "bin").stat().st_mode) == 0o700
    for mode in ("4755", "2755", "1777", "6755", "0o4755", "888", "rwx", "75", "07555"):
        status, body = await api.post(url, json={"files": [{"file": "run.sh", "mode": mode}]})
        assert status == 400 and body["code"] == "validation_failed", (mode, body)
    assert stat.S_IMODE((path / "run.sh").stat().st_mode) == 0o755
    for target in ("secret", "outdir", "passwd", "loop", "outdir/secret.txt", "../x", ""):
        status, body = await api.post(url, json={"files": [{"file": "run.sh", "mode": "0600"},
                                                           {"file": target, "mode": "0777"}]})
        assert status == 400, (target, body)
    assert stat.S_IMODE((tmp_path / "outside" / "secret.txt").stat().st_mode) == outside_mode
    assert stat.S_IMODE(Path("/etc/passwd").stat().st_mode) == 0o644
    assert stat.S_IMODE((path / "run.sh").stat().st_mode) == 0o755  # the batch was refused whole
    status, body = await api.post(url, json={"files": [{"file": "missing", "mode": "0644"}]})
    assert status == 404
