"""Pull from a URL (issue 14, section 2): downloads from a local server the allow-list admits, and the SSRF
attempts that must fail — a refused literal, a DNS name resolving to loopback, redirects to loopback and the
metadata address, other schemes — plus the size cap, the disk limit mid-download, cancel and the per-volume
bound. The origin listens on 127.0.0.2 (admitted by `volumes.pull_allowed_networks`); a sentinel on
127.0.0.1 (not admitted) must never see a request."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from lightd import keys
from lightd.volumes.pulls import CHUNK
from lightd.volumes.sandbox import TEMP_PREFIX
from tests.api.pull_origin import BODY, Origin
from tests.conftest import Api, wait_for

ALLOWED = "127.0.0.2"
LIMIT = 1024 * 1024


@pytest.fixture
def config(make_config):
    return make_config(volumes={"pull_allowed_networks": [f"{ALLOWED}/32"], "pull_max_bytes": LIMIT})


@pytest.fixture
async def origin():
    server = await Origin(ALLOWED).start()
    yield server
    await server.stop()


@pytest.fixture
async def sentinel():
    """A server on 127.0.0.1, which the allow-list does not admit: nothing may reach it."""
    server = await Origin("127.0.0.1").start()
    yield server
    await server.stop()
    assert server.hits == [], "a refused address was connected to"


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"], Path(body["path"])


async def pull(api: Api, volume_id: str, url: str, **extra: Any) -> tuple[int, Any]:
    return await api.post(f"/volumes/{volume_id}/files/pull", json={"url": url, **extra})


async def finished(api: Api, volume_id: str, pull_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, body = await api.get(f"/volumes/{volume_id}/files/pull/{pull_id}")
        assert status == 200, body
        return body if body["state"] != "running" else None

    return await wait_for(done, timeout=20)


async def pulled(api: Api, volume_id: str, url: str, **extra: Any) -> dict[str, Any]:
    status, body = await pull(api, volume_id, url, **extra)
    assert status == 202, body
    assert body["state"] == "running"
    return await finished(api, volume_id, body["id"])


def leftovers(root: Path) -> list[Path]:
    return list(root.rglob(f"{TEMP_PREFIX}*"))


def assert_failed(result: dict[str, Any], code: str) -> None:
    assert result["state"] == "failed" and result["error"]["code"] == code, result


async def test_pull_saves_the_file_and_lists_it(api, origin):
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"{origin.base}/file.bin", directory="downloads/new")
    assert result["state"] == "completed", result
    assert result["path"] == "downloads/new/file.bin" and result["bytes"] == result["total"] == len(BODY)
    assert (root / "downloads" / "new" / "file.bin").read_bytes() == BODY
    assert (root / "downloads" / "new" / "file.bin").stat().st_mode & 0o7777 == 0o644
    status, listed = await api.get(f"/volumes/{volume_id}/files/pull")
    assert status == 200 and listed["count"] == 1 and listed["pulls"][0]["id"] == result["id"]
    # A finished pull cannot be cancelled; an unknown one is 404.
    status, body = await api.delete(f"/volumes/{volume_id}/files/pull/{result['id']}")
    assert status == 409 and body["code"] == "conflict", body
    status, body = await api.get(f"/volumes/{volume_id}/files/pull/nosuchpull")
    assert status == 404 and body["code"] == "not_found"
    assert leftovers(root) == []


async def test_redirects_within_allowed_hosts_and_names(api, origin):
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"{origin.base}/redirect?to=/file.bin", file_name="given.bin")
    assert result["state"] == "completed" and result["path"] == "given.bin", result
    assert (root / "given.bin").read_bytes() == BODY
    # A hostile Content-Disposition is reduced to a base name without control characters.
    result = await pulled(api, volume_id, f"{origin.base}/named", directory="d")
    assert result["state"] == "completed" and result["path"] == "d/evil.txt", result
    assert (root / "d" / "evil.txt").read_bytes() == b"named"
    assert not (root / "etc").exists()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/file.bin", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest",
    "http://[::ffff:127.0.0.1]:9/", "http://[::1]:9/", "http://10.0.0.1/", "http://100.100.100.200/",
    "http://0.0.0.0:9/", "http://224.0.0.1/", "http://[fe80::1]/",
])
async def test_refused_literal_addresses(api, url):
    volume_id, _ = await new_volume(api)
    status, body = await pull(api, volume_id, url)
    assert status == 400 and body["code"] == "address_not_allowed", body


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/x", "gopher://127.0.0.2:70/", "javascript:alert(1)", "/relative",
    "http:///nohost",
])
async def test_other_schemes_are_refused(api, url):
    volume_id, _ = await new_volume(api)
    status, body = await pull(api, volume_id, url)
    assert status == 400 and body["code"] == "validation_failed" and body["details"]["field"] == "url", body


async def test_a_name_resolving_to_loopback_is_refused(api, sentinel):
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"http://localhost:{sentinel.port}/file.bin")
    assert_failed(result, "address_not_allowed")
    assert "127.0.0.1" in result["error"]["error"]
    assert list(root.iterdir()) == []


class NamesResolver(AbstractResolver):
    """A DNS of the test's own: each name resolves to the addresses given."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host not in self.names:
            raise OSError(f"{host}: unknown name")
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                for address in self.names[host]]

    async def close(self) -> None:
        pass


async def test_names_are_checked_after_resolution(api, client, origin, sentinel):
    """The connection goes to the address that was checked: a name with a refused and an admitted address
    reaches the admitted one only; a name with refused addresses only is refused."""
    client.app[keys.PULLS].resolver = NamesResolver({
        "mixed.test": ["127.0.0.1", ALLOWED], "internal.test": ["127.0.0.1", "169.254.169.254"],
    })
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"http://internal.test:{sentinel.port}/file.bin")
    assert_failed(result, "address_not_allowed")
    result = await pulled(api, volume_id, f"http://mixed.test:{origin.port}/file.bin")
    assert result["state"] == "completed", result
    assert (root / "file.bin").read_bytes() == BODY


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/file.bin", "http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/file.bin",
    "http://[::ffff:127.0.0.1]:{port}/file.bin", "file:///etc/passwd", "http://[fd00:ec2::254]/",
])
async def test_redirects_to_refused_places_fail(api, origin, sentinel, target):
    volume_id, root = await new_volume(api)
    to = target.format(port=sentinel.port)
    result = await pulled(api, volume_id, f"{origin.base}/redirect?to={to}")
    assert_failed(result, "pull_failed" if to.startswith("file:") else "address_not_allowed")
    assert origin.hits == ["/redirect"]
    assert list(root.iterdir()) == []


async def test_redirect_loops_and_error_statuses_fail(api, origin):
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"{origin.base}/loop")
    assert_failed(result, "pull_failed")
    assert len(origin.hits) == 6 and "redirects" in result["error"]["error"]
    result = await pulled(api, volume_id, f"{origin.base}/missing")
    assert_failed(result, "pull_failed")
    assert "404" in result["error"]["error"]
    assert list(root.iterdir()) == []


async def test_size_limit_declared_and_streamed(api, origin):
    volume_id, root = await new_volume(api)
    result = await pulled(api, volume_id, f"{origin.base}/declared/{LIMIT + 1}")
    assert_failed(result, "payload_too_large")
    result = await pulled(api, volume_id, f"{origin.base}/stream/{LIMIT + 1}")
    assert_failed(result, "payload_too_large")
    assert result["total"] is None and LIMIT < result["bytes"] <= LIMIT + CHUNK  # it stopped reading at once
    assert list(root.iterdir()) == []
    result = await pulled(api, volume_id, f"{origin.base}/stream/{LIMIT}")
    assert result["state"] == "completed" and (root / str(LIMIT)).stat().st_size == LIMIT


async def test_disk_limit_hit_mid_download_leaves_nothing(api, origin):
    volume_id, root = await new_volume(api)
    (root / "world.dat").write_bytes(b"w" * 1000)
    service = api.client.app[keys.VOLUMES]
    service.set_disk_limit(volume_id, 1)
    used = await service.usage_bytes(volume_id)
    service.set_disk_limit(volume_id, used + 300 * 1024)
    result = await pulled(api, volume_id, f"{origin.base}/stream/{600 * 1024}", directory="maps")
    assert_failed(result, "disk_quota_exceeded")
    assert result["bytes"] > 0  # it failed part-way, not up front
    assert sorted(p.name for p in root.rglob("*")) == ["maps", "world.dat"]
    assert await service.usage_bytes(volume_id) == used  # the bytes it held are given back
    # Declared sizes that cannot fit fail before a byte is written.
    result = await pulled(api, volume_id, f"{origin.base}/declared/{400 * 1024}")
    assert_failed(result, "disk_quota_exceeded")
    assert result["bytes"] == 0 and leftovers(root) == []


async def test_cancel_leaves_no_partial_file(api, origin):
    volume_id, root = await new_volume(api)
    status, started = await pull(api, volume_id, f"{origin.base}/slow", file_name="slow.bin")
    assert status == 202

    async def receiving() -> bool:
        return (await api.get(f"/volumes/{volume_id}/files/pull/{started['id']}"))[1]["bytes"] > 0

    await wait_for(receiving, timeout=10)
    assert len(leftovers(root)) == 1  # it is written to a temp file
    status, body = await api.delete(f"/volumes/{volume_id}/files/pull/{started['id']}")
    assert status == 200 and body["state"] == "cancelled", body
    assert list(root.iterdir()) == []


async def test_a_fourth_concurrent_pull_is_refused(api, origin):
    volume_id, root = await new_volume(api)
    other_id, _ = await new_volume(api)
    ids = []
    for i in range(3):
        status, body = await pull(api, volume_id, f"{origin.base}/slow", file_name=f"s{i}")
        assert status == 202, body
        ids.append(body["id"])
    status, body = await pull(api, volume_id, f"{origin.base}/slow")
    assert status == 409 and body["code"] == "too_many_pulls" and body["details"]["limit"] == 3, body
    status, body = await pull(api, other_id, f"{origin.base}/file.bin")  # the bound is per volume
    assert status == 202, body
    for pull_id in ids:
        status, body = await api.delete(f"/volumes/{volume_id}/files/pull/{pull_id}")
        assert status == 200 and body["state"] == "cancelled"
    status, body = await pull(api, volume_id, f"{origin.base}/file.bin")
    assert status == 202, body
    await finished(api, volume_id, body["id"])
    assert sorted(p.name for p in root.iterdir()) == ["file.bin"]


@pytest.mark.parametrize("extra", [
    {"file_name": "a/b"}, {"file_name": ".."}, {"file_name": TEMP_PREFIX + "x"}, {"directory": "../up"},
    {"directory": "/abs"},
])
async def test_bad_destinations_are_refused(api, origin, extra):
    volume_id, _ = await new_volume(api)
    status, body = await pull(api, volume_id, f"{origin.base}/file.bin", **extra)
    assert status == 400 and body["code"] == "path_not_allowed", body
    assert origin.hits == []


async def test_unknown_volume_and_daemon_stop(api, origin):
    status, body = await pull(api, "00000000-0000-4000-8000-000000000000", f"{origin.base}/file.bin")
    assert status == 404, body
    volume_id, root = await new_volume(api)
    status, _ = await pull(api, volume_id, f"{origin.base}/slow")
    assert status == 202
    await wait_for(lambda: leftovers(root), timeout=10)
    await api.client.app[keys.PULLS].close()  # what the daemon's shutdown does
    assert leftovers(root) == []
