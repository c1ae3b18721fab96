"""Disk limits on every write lightd makes (issue 10, item 6), file modes (item 2), leftover temp files
(item 8) and the volume chown, over HTTP and through the service the server manager calls."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from lightd import keys
from lightd.app import create_app
from lightd.volumes.sandbox import TEMP_PREFIX
from tests.conftest import Api, wait_for
from tests.volumes.helpers import PeakSampler, build_deep, deepest, make_outside, remove_all

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_deep_leftovers(tmp_path: Path):
    yield
    remove_all(tmp_path)


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


def leftovers(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob(f"{TEMP_PREFIX}*"))


async def limited(api: Api, room: int) -> tuple[str, Path, int]:
    """A volume holding a few files, its disk limit set `room` bytes above what it uses."""
    volume_id, path = await new_volume(api)
    (path / "world").mkdir()
    for i in range(3):
        (path / "world" / f"r{i}.mca").write_bytes(b"r" * 400)
    service = api.client.app[keys.VOLUMES]
    service.set_disk_limit(volume_id, 1)  # measured with a limit in place
    used = await service.usage_bytes(volume_id)
    assert used == 1200
    service.set_disk_limit(volume_id, used + room)
    return volume_id, path, used


def assert_quota(status: int, body: dict) -> None:
    assert status == 409 and body["code"] == "disk_quota_exceeded", (status, body)
    assert body["details"]["limit"] and "limit" in body["error"]


async def test_file_write_is_held_to_the_limit(api):
    volume_id, path, used = await limited(api, 1000)
    base = f"/volumes/{volume_id}"
    assert_quota(*await api.post(f"{base}/files", json={"path": "big.bin", "content": "x" * 1001}))
    assert not (path / "big.bin").exists() and leftovers(path) == []
    assert (await api.post(f"{base}/files", json={"path": "cfg.yml", "content": "x" * 900}))[0] == 201
    # rewriting a file is held to what it adds, as Wings does
    assert (await api.post(f"{base}/files", json={"path": "cfg.yml", "content": "y" * 950}))[0] == 201
    assert_quota(*await api.post(f"{base}/files", json={"path": "more.txt", "content": "z" * 100}))
    service = api.client.app[keys.VOLUMES]
    assert await service.usage_bytes(volume_id) == used + 950  # kept current without a walk


async def test_copy_is_held_to_the_limit_and_leaves_nothing(api):
    volume_id, path, used = await limited(api, 1000)
    base = f"/volumes/{volume_id}"
    # one file: refused from its size before a byte is copied
    (path / "one.bin").write_bytes(b"o" * 600)
    api.client.app[keys.VOLUMES].set_disk_limit(volume_id, used + 600 + 500)
    await api.client.app[keys.VOLUMES].over_disk_limit(volume_id, fresh=True)
    assert_quota(*await api.post(f"{base}/copy", json={"source": "one.bin", "destination": "two.bin"}))
    # a tree: refused part way (two of three files fit), the half copy removed
    api.client.app[keys.VOLUMES].set_disk_limit(volume_id, used + 600 + 1000)
    assert_quota(*await api.post(f"{base}/copy", json={"source": "world", "destination": "world2"}))
    assert not (path / "two.bin").exists() and not (path / "world2").exists() and leftovers(path) == []
    assert await api.client.app[keys.VOLUMES].usage_bytes(volume_id) == used + 600  # reservations given back


async def test_a_sparse_file_does_not_compress_into_a_real_one(api):
    volume_id, path = await new_volume(api)
    service = api.client.app[keys.VOLUMES]
    with (path / "sparse.bin").open("wb") as f:
        f.truncate(2 << 30)  # 2 GiB that cost no disk
    assert (path / "sparse.bin").stat().st_blocks == 0
    # a limit below what the volume declares: nothing may be written at all
    service.set_disk_limit(volume_id, 64 * MB)
    assert_quota(*await api.post(f"/volumes/{volume_id}/compress", json={"path": "sparse.bin", "format": "tar"}))
    # 8 MiB of room: the archive's real bytes are counted as they are written, and it stops there
    service.set_disk_limit(volume_id, (2 << 30) + 8 * MB)
    with PeakSampler() as peak:
        status, body = await api.post(f"/volumes/{volume_id}/compress", json={"path": "sparse.bin", "format": "tar",
                                                                             "destination": "s.tar"})
    assert_quota(status, body)
    assert sorted(p.name for p in path.iterdir()) == ["sparse.bin"]  # no archive, no temp file
    assert peak.rss_growth < 100 * MB


async def test_decompress_checks_declared_sizes_first(api):
    volume_id, path, used = await limited(api, 1000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("a.bin", "b.bin"):
            info = tarfile.TarInfo(name)
            info.size = 600
            tf.addfile(info, io.BytesIO(b"a" * 600))
    (path / "up.tar.gz").write_bytes(buf.getvalue())
    api.client.app[keys.VOLUMES].set_disk_limit(volume_id, used + len(buf.getvalue()) + 1000)
    await api.client.app[keys.VOLUMES].over_disk_limit(volume_id, fresh=True)
    status, body = await api.post(f"/volumes/{volume_id}/decompress", json={"path": "up.tar.gz", "destination": "out"})
    assert_quota(status, body)
    assert body["details"]["requested"] == 1200
    assert not (path / "out").exists() and leftovers(path) == []


async def test_start_check_sees_what_the_server_wrote(api):
    volume_id, path, used = await limited(api, 1000)
    service = api.client.app[keys.VOLUMES]
    assert await service.over_disk_limit(volume_id) == (False, used, used + 1000)
    (path / "written-by-the-server.bin").write_bytes(b"s" * 2000)
    assert (await service.over_disk_limit(volume_id)).over is False  # cached, as Wings' disk check
    check = await service.over_disk_limit(volume_id, fresh=True)
    assert check.over is True and check.used == used + 2000 and check.limit == used + 1000
    service.set_disk_limit(volume_id, 0)
    assert (await service.over_disk_limit(volume_id)) == (False, used + 2000, None)
    assert (await api.post(f"/volumes/{volume_id}/files", json={"path": "ok", "content": "x" * 5000}))[0] == 201


async def test_modes_never_carry_setuid_setgid_or_sticky(api):
    volume_id, path = await new_volume(api)
    base = f"/volumes/{volume_id}"
    for asked, stored in (("4755", 0o755), ("2775", 0o775), ("1777", 0o777), ("6711", 0o711), ("0640", 0o640)):
        status, _ = await api.post(f"{base}/files", json={"path": f"m{asked}", "content": "#!/bin/sh", "mode": asked})
        assert status == 201 and stat.S_IMODE((path / f"m{asked}").stat().st_mode) == stored, asked
    # a setuid file the server made keeps its other bits, not those, when lightd rewrites it
    os.chmod(path / "m0640", 0o4755)
    assert (await api.post(f"{base}/files", json={"path": "m0640", "content": "new"}))[0] == 201
    assert stat.S_IMODE((path / "m0640").stat().st_mode) == 0o755
    service = api.client.app[keys.VOLUMES]
    assert (await service.chmod(volume_id, "m0640", 0o6755))["mode"] == "0755"
    assert stat.S_IMODE((path / "m0640").stat().st_mode) == 0o755
    os.chmod(path / "m0640", 0o4755)
    status, body = await api.post(f"{base}/compress", json={"path": "m0640", "format": "tar", "destination": "m.tar"})
    assert status == 201
    with tarfile.open(path / "m.tar") as tf:
        assert tf.getmember("m0640").mode == 0o755


async def test_leftover_temp_files_are_cleaned(aiohttp_client, config, auth_headers, tmp_path):
    outside = make_outside(tmp_path / "outside")
    first = Api(await aiohttp_client(create_app(config)), auth_headers)
    volume_id, path = await new_volume(first)
    await first.client.close()
    # what a daemon killed during a write or an extraction leaves, and things only named like it
    (path / f"{TEMP_PREFIX}0001").write_bytes(b"half")
    (path / "a" / "b").mkdir(parents=True)
    (path / "a" / "b" / f"{TEMP_PREFIX}0002").write_bytes(b"half")
    build_deep(path, 300, leaf=None)
    (path.joinpath(*["d"] * 300) / f"{TEMP_PREFIX}0003").write_bytes(b"deep")
    os.symlink(outside / "sentinel.txt", path / f"{TEMP_PREFIX}link")
    (path / f"{TEMP_PREFIX}dir").mkdir()
    (path / f"{TEMP_PREFIX}dir" / "keep.txt").write_text("kept")
    (path / "keep.txt").write_text("kept")
    time.sleep(0.05)  # file times are coarse: what follows starts clearly after

    client = await aiohttp_client(create_app(config))
    service = client.app[keys.VOLUMES]
    await asyncio.sleep(0.05)
    (path / f"{TEMP_PREFIX}running").write_bytes(b"an operation of this run")
    # The app cleans them in the background at start; a second pass finds nothing more to remove.
    await wait_for(lambda: len(leftovers(path)) == 3, timeout=10)
    assert await service.clean_temp_files() == 0
    assert leftovers(path) == sorted([f"{TEMP_PREFIX}link", f"{TEMP_PREFIX}dir", f"{TEMP_PREFIX}running"])
    assert (outside / "sentinel.txt").read_text() == "do not touch"
    assert (path / "keep.txt").exists() and (path / f"{TEMP_PREFIX}dir" / "keep.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_chown_gives_the_volume_to_the_server_user(api, tmp_path):
    outside = make_outside(tmp_path / "outside")
    host_file = outside / "sentinel.txt"
    owner = host_file.stat().st_uid, host_file.stat().st_gid
    volume_id, path = await new_volume(api)
    (path / "plugins").mkdir()
    (path / "plugins" / "suid").write_bytes(b"#!/bin/sh")
    os.chmod(path / "plugins" / "suid", 0o6755)
    os.symlink(host_file, path / "hostlink")  # planted: chown must change the link, never the host file
    os.symlink(outside, path / "plugins" / "hostdir")
    os.mkfifo(path / "fifo")
    build_deep(path, 21_000)
    with PeakSampler() as peak:
        counts = await api.client.app[keys.VOLUMES].chown(volume_id, 4321, 4322)
    assert counts["setid_cleared"] == 1 and counts["entries"] >= 21_000
    assert (host_file.stat().st_uid, host_file.stat().st_gid) == owner
    assert all((p.stat().st_uid, p.stat().st_gid) == owner for p in outside.rglob("*"))
    for entry in (path, path / "plugins", path / "plugins" / "suid", path / "fifo", path / "d"):
        assert (entry.lstat().st_uid, entry.lstat().st_gid) == (4321, 4322), entry
    assert os.lstat(path / "hostlink").st_uid == 4321
    assert stat.S_IMODE((path / "plugins" / "suid").stat().st_mode) == 0o755
    depth, bottom = deepest(path)
    assert depth == 21_000 and bottom is not None and (bottom.st_uid, bottom.st_gid) == (4321, 4322)
    assert peak.fd_growth < 150, peak.fd_growth
