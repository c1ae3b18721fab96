"""/volumes against a tenant that is an attacker (issue 10, items 3 and 4): a tar header bomb and a
21,000-level tree, each performed over HTTP against the real app, which must keep answering its ping."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.volumes.helpers import PeakSampler, build_deep, deepest, remove_all

PING = "/api/v1/public/ping"
DEEP = 21_000
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_deep_leftovers(tmp_path: Path):
    """pytest's cleanup recurses and would fail (for every later session) on what these tests build."""
    yield
    remove_all(tmp_path)


@pytest.fixture(scope="session")
def pax_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1 MB .tar.gz whose first header, a pax header, declares 1 GiB and is followed by 1 GiB of zeros."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    header = tarfile.TarInfo._create_header(  # noqa: SLF001 (tobuf will not make a bare pax header)
        {"name": "././@PaxHeader", "mode": 0o644, "uid": 0, "gid": 0, "size": 1 << 30, "mtime": 0,
         "type": tarfile.XHDTYPE, "linkname": "", "uname": "", "gname": "", "devmajor": 0, "devminor": 0,
         "prefix": ""}, tarfile.USTAR_FORMAT, "utf-8", "strict")
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MB)
    with path.open("wb") as out:
        out.write(gz.compress(header))
        for _ in range(1024):
            out.write(gz.compress(zeros))
        out.write(gz.flush())
    return path


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


async def pinging(api: Api, task: asyncio.Future[Any], at_least: int = 3) -> list[float]:
    """Ping the app until `task` is done (and at least `at_least` times); the latencies."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    for _ in range(600):  # at most ~30 s
        if task.done() and len(latencies) >= at_least:
            break
        started = loop.time()
        status, _ = await asyncio.wait_for(api.get(PING), 10)
        assert status == 200
        latencies.append(loop.time() - started)
        await asyncio.sleep(0.05)
    return latencies


async def test_pax_header_bomb_is_refused_in_bounded_memory(api, pax_bomb):
    volume_id, path = await new_volume(api)
    assert pax_bomb.stat().st_size < 2 * MB
    shutil.copyfile(pax_bomb, path / "bomb.tar.gz")
    with PeakSampler() as peak:
        task = asyncio.ensure_future(api.post(f"/volumes/{volume_id}/decompress",
                                              json={"path": "bomb.tar.gz", "destination": "out"}))
        latencies = await pinging(api, task)
        status, body = await asyncio.wait_for(task, 60)
    assert status == 400 and body["code"] == "archive_rejected", body
    assert "archive_max_header_bytes" in body["error"]
    assert peak.rss_growth < 100 * MB, peak.rss_growth  # tarfile would have read the 1 GiB header whole
    assert max(latencies) < 1.0, latencies
    assert sorted(p.name for p in path.iterdir()) == ["bomb.tar.gz"]


async def test_a_21000_level_tree_over_http(api):
    volume_id, path = await new_volume(api)
    base = f"/volumes/{volume_id}"
    build_deep(path, DEEP, "d")
    build_deep(path, DEEP, "e")  # left for the volume delete
    (path / "small.txt").write_text("x")
    with PeakSampler() as peak:
        status, body = await api.get(f"{base}/usage")
        assert status == 200 and body["partial"] is True and "4096" in body["partial_reason"], body
        assert body["bytes"] >= 1 and body["directories"] > 4096
        status, body = await api.get(base)
        assert status == 200 and body["usage"]["partial"] is True

        status, body = await api.post(f"{base}/compress", json={"path": "d", "format": "tar"})
        assert status == 400 and body["code"] == "tree_too_deep" and "max_depth" in body["error"], body
        status, body = await api.post(f"{base}/copy", json={"source": "d", "destination": "d2"})
        assert status == 400 and body["code"] == "tree_too_deep", body
        assert sorted(p.name for p in path.iterdir()) == ["d", "e", "small.txt"]  # nothing half made
        deep_path = "/".join(["d"] * 2000)  # as deep as a path can name (4096 bytes)
        status, body = await api.get(f"{base}/files", params={"path": deep_path})
        assert status == 200 and [e["name"] for e in body["entries"]] == ["d"]

        status, body = await api.delete(f"{base}/files", params={"path": "d"})
        assert status == 200 and body["deleted"] == "directory", body
        assert not (path / "d").exists() and deepest(path, "e")[0] == DEEP
        status, body = await api.delete(base)
        assert status == 200, body
        assert not path.exists()
    assert peak.fd_growth < 150, peak.fd_growth  # one descriptor per level would be 21,000
    assert peak.rss_growth < 100 * MB, peak.rss_growth


@pytest.mark.docker
async def test_a_deep_tree_built_in_a_container_can_be_removed(api, docker_engine, container_prefix):
    volume_id, path = await new_volume(api)
    # As a tenant would: `mkdir -p` of the longest relative path a call takes, then into it, 11 times.
    script = ('p=d; i=1; while [ $i -lt 2000 ]; do p="$p/d"; i=$((i+1)); done; cd /data || exit 1; '
              'for n in 1 2 3 4 5 6 7 8 9 10 11; do mkdir -p "$p" && cd -P "$p" || exit 1; done; '
              'echo bottom > bottom.txt')
    run = await asyncio.to_thread(
        subprocess.run, ["docker", "run", "--rm", "--name", f"{container_prefix}deep",
                         "--label", f"lightd.prefix={container_prefix}", "-v", f"{path}:/data", docker_engine,
                         "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert deepest(path)[0] == 22_000
    status, body = await api.get(f"/volumes/{volume_id}/usage")
    assert status == 200 and body["partial"] is True
    assert (await api.get(f"/volumes/{volume_id}"))[0] == 200
    status, body = await api.delete(f"/volumes/{volume_id}")
    assert status == 200, body
    assert not path.exists()
