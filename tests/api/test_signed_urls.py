"""Signed one-shot URLs (issue 14, section 3): minted by the node token, served without it, once; refused
when reused (also after a restart), expired, used for another purpose or target, tampered with, or signed
with another secret."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from lightd.app import create_app
from lightd.signed_urls import ALGORITHM, ISSUER, signing_key
from tests.backups.helpers import backup, server_with_files
from tests.conftest import Api

CONTENT = b"level-name=world\n" * 100


async def new_volume(api: Api) -> tuple[str, Path]:
    status, body = await api.post("/volumes")
    assert status == 201, body
    (Path(body["path"]) / "server.properties").write_bytes(CONTENT)
    return body["volume_id"], Path(body["path"])


async def mint(api: Api, **body: Any) -> str:
    status, answer = await api.post("/auth/signed-urls", json=body)
    assert status == 201, answer
    assert set(answer) == {"url", "id", "purpose", "expires_at"}
    return answer["url"]


def local(url: str) -> str:
    """The URL's path and query, for the test client (the URL names the address the request came to)."""
    parsed = URL(url)
    assert parsed.scheme == "http" and parsed.host == "127.0.0.1"
    return str(parsed.relative())


async def browser(api: Api, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """A request without the node token or the vendor header, as a browser makes it."""
    async with api.client.request(method, local(url) if url.startswith("http") else url, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.read()


def assert_code(answer: tuple[int, Any], status: int, code: str) -> None:
    assert answer[0] == status and answer[1]["code"] == code, answer


def with_query(url: str, **changes: str) -> str:
    parsed = URL(url)
    return str(parsed.with_query({**parsed.query, **changes}))


def forged(node_token: str, volume_id: str, path: str, *, key: Any = None, algorithm: str = ALGORITHM,
           **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "jti": "forged-" + str(now), "iat": now, "exp": now + 60, "purpose": "file-download",
               "volume_id": volume_id, "path": path, "container_id": None, "backup_id": None, **claims}
    return jwt.encode(payload, signing_key(node_token) if key is None else key, algorithm=algorithm)


async def test_download_once(api):
    volume_id, _ = await new_volume(api)
    url = await mint(api, purpose="file-download", volume_id=volume_id, path="server.properties", ttl_seconds=60)
    assert URL(url).path == "/download/file"
    status, content = await browser(api, "GET", url)
    assert status == 200 and content == CONTENT
    assert_code(await browser(api, "GET", url), 401, "signed_url_used")


async def test_a_range_and_a_head_do_not_get_a_second_use(api):
    volume_id, _ = await new_volume(api)
    url = await mint(api, purpose="file-download", volume_id=volume_id, path="server.properties")
    status, _ = await browser(api, "HEAD", url)
    assert status == 405  # a link preview cannot use the URL up
    status, content = await browser(api, "GET", url, headers={"Range": "bytes=0-9"})
    assert status == 206 and content == CONTENT[:10]
    assert_code(await browser(api, "GET", url), 401, "signed_url_used")


async def test_racing_uses_exactly_one_wins(api):
    volume_id, _ = await new_volume(api)
    url = await mint(api, purpose="file-download", volume_id=volume_id, path="server.properties")
    answers = await asyncio.gather(*(browser(api, "GET", url) for _ in range(5)))
    assert sorted(status for status, _ in answers) == [200, 401, 401, 401, 401]


async def test_a_used_url_stays_used_after_a_restart(aiohttp_client, config, auth_headers):
    first = Api(await aiohttp_client(create_app(config)), auth_headers)
    volume_id, _ = await new_volume(first)
    url = await mint(first, purpose="file-download", volume_id=volume_id, path="server.properties", ttl_seconds=600)
    unused = await mint(first, purpose="file-download", volume_id=volume_id, path="server.properties")
    assert (await browser(first, "GET", url))[0] == 200
    await first.client.close()
    second = Api(await aiohttp_client(create_app(config)), auth_headers)
    assert_code(await browser(second, "GET", url), 401, "signed_url_used")
    assert (await browser(second, "GET", unused))[0] == 200


async def test_another_target_or_purpose_is_refused(api):
    volume_id, root = await new_volume(api)
    (root / "secret.txt").write_bytes(b"not for this link")
    other_id, _ = await new_volume(api)
    url = await mint(api, purpose="file-download", volume_id=volume_id, path="server.properties")
    assert_code(await browser(api, "GET", with_query(url, path="secret.txt")), 403, "signed_url_mismatch")
    assert_code(await browser(api, "GET", with_query(url, volume_id=other_id)), 403, "signed_url_mismatch")
    # The same token on the other routes: another purpose.
    token = URL(url).query["token"]
    upload = f"/upload/file?volume_id={volume_id}&directory=&token={token}"
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="x.txt")
    assert_code(await browser(api, "POST", upload, data=form), 403, "signed_url_mismatch")
    backup = f"/download/backup?container_id=c1&backup_id=b1&token={token}"
    assert_code(await browser(api, "GET", backup), 403, "signed_url_mismatch")
    assert not (root / "x.txt").exists()
    # None of that used the URL up.
    status, content = await browser(api, "GET", url)
    assert status == 200 and content == CONTENT


async def test_expired_tampered_and_foreign_tokens(api, node_token):
    volume_id, _ = await new_volume(api)
    base = f"/download/file?volume_id={volume_id}&path=server.properties&token="

    def get(token: str) -> Any:
        return browser(api, "GET", base + token)

    assert (await get(forged(node_token, volume_id, "server.properties")))[0] == 200  # the forge is right
    assert_code(await get(forged(node_token, volume_id, "server.properties", exp=int(time.time()) - 1)),
                401, "signed_url_expired")
    good = forged(node_token, volume_id, "server.properties", jti="fresh")
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_code(await get(f"{header}.{payload}.{flipped}"), 401, "signed_url_invalid")
    other_payload = forged(node_token, volume_id, "secret.txt", jti="fresh").split(".")[1]
    assert_code(await get(f"{header}.{other_payload}.{signature}"), 401, "signed_url_invalid")
    for key in ("another-secret-of-32-bytes-or-more!!", node_token):  # the node token itself never signs
        assert_code(await get(forged(node_token, volume_id, "server.properties", key=key)), 401, "signed_url_invalid")
    unsigned = jwt.encode({"iss": ISSUER, "jti": "n", "iat": 1, "exp": int(time.time()) + 60, "purpose": "file-download",
                           "volume_id": volume_id, "path": "server.properties"}, None, algorithm="none")
    assert_code(await get(unsigned), 401, "signed_url_invalid")
    for junk in ("x", "a.b.c", "A" * 5000):
        assert_code(await get(junk), 401, "signed_url_invalid")
    assert (await get(good))[0] == 200


async def test_upload_once(api):
    volume_id, root = await new_volume(api)
    url = await mint(api, purpose="file-upload", volume_id=volume_id, path="plugins")
    assert URL(url).path == "/upload/file" and URL(url).query["directory"] == "plugins"
    form = aiohttp.FormData()
    form.add_field("files", b"jar bytes", filename="plugin.jar")
    status, body = await browser(api, "POST", url, data=form)
    assert status == 201 and body["files"] == [{"path": "plugins/plugin.jar", "size": 9}], body
    assert (root / "plugins" / "plugin.jar").read_bytes() == b"jar bytes"
    again = aiohttp.FormData()
    again.add_field("files", b"second", filename="other.jar")
    assert_code(await browser(api, "POST", url, data=again), 401, "signed_url_used")
    assert not (root / "plugins" / "other.jar").exists()


@pytest.mark.parametrize("body, status, code", [
    ({"purpose": "file-download", "volume_id": "V"}, 400, "validation_failed"),  # no path
    ({"purpose": "file-download", "path": "a"}, 400, "validation_failed"),  # no target
    ({"purpose": "file-download", "volume_id": "V", "container_id": "c", "path": "a"}, 400, "validation_failed"),
    ({"purpose": "file-download", "volume_id": "V", "path": "../etc/passwd"}, 400, "path_not_allowed"),
    ({"purpose": "file-download", "volume_id": "V", "path": "a", "ttl_seconds": 3601}, 400, "validation_failed"),
    ({"purpose": "file-download", "volume_id": "V", "path": "a", "ttl_seconds": 0}, 400, "validation_failed"),
    ({"purpose": "websocket", "volume_id": "V", "path": "a"}, 400, "validation_failed"),
    ({"purpose": "backup-download", "container_id": "c"}, 400, "validation_failed"),  # no backup_id
    ({"purpose": "backup-download", "container_id": "nosuchserver", "backup_id": "b"}, 404, "not_found"),
    ({"purpose": "file-upload", "container_id": "nosuchserver"}, 404, "not_found"),
    ({"purpose": "file-upload", "volume_id": "00000000-0000-4000-8000-000000000000"}, 404, "not_found"),
])
async def test_minting_checks_its_request(api, body, status, code):
    volume_id, _ = await new_volume(api)
    body = {k: volume_id if v == "V" else v for k, v in body.items()}
    assert_code(await api.post("/auth/signed-urls", json=body), status, code)


async def test_only_the_node_token_mints_and_the_routes_need_no_token(api, auth_headers):
    volume_id, _ = await new_volume(api)
    status, temp = await api.post("/auth/tokens", json={"purpose": "api"})
    assert status == 201
    headers = {**auth_headers, "Authorization": f"Bearer {temp['token']}"}
    body = {"purpose": "file-download", "volume_id": volume_id, "path": "server.properties"}
    assert_code(await api.post("/auth/signed-urls", json=body, headers=headers), 403, "forbidden")
    # Public routes still refuse what they do not read, and a missing token is a missing field.
    base = f"/download/file?volume_id={volume_id}&path=server.properties"
    assert_code(await browser(api, "GET", base), 400, "validation_failed")
    assert_code(await browser(api, "GET", base + "&token=x&extra=1"), 400, "validation_failed")


@pytest.mark.docker
async def test_backup_download_once_and_a_server_as_target(dapi, docker_config):
    await server_with_files(dapi, "su-backup", {"server.properties": CONTENT})
    view = await backup(dapi, "su-backup")
    url = await mint(dapi, purpose="backup-download", container_id="su-backup", backup_id=view["backup_id"])
    assert URL(url).path == "/download/backup"
    assert_code(await browser(dapi, "GET", with_query(url, backup_id="another")), 403, "signed_url_mismatch")
    async with dapi.client.get(local(url)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_disposition.filename == f"{view['backup_id']}.tar.zst"
        data = await resp.read()
    assert hashlib.sha256(data).hexdigest() == view["sha256"]
    assert_code(await browser(dapi, "GET", url), 401, "signed_url_used")
    # A file of the server's volume, the server named instead of the volume.
    url = await mint(dapi, purpose="file-download", container_id="su-backup", path="server.properties")
    assert (await browser(dapi, "GET", url)) == (200, CONTENT)
