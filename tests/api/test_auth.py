"""Authentication, the vendor header, temporary tokens, errors and limits at the HTTP edge."""

from __future__ import annotations

import asyncio
import time

from lightd import keys
from lightd.app import create_app
from lightd.timestamps import parse_rfc3339
from tests.conftest import VENDOR, Api


async def test_ping_is_public(client):
    async with client.get("/api/v1/public/ping") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


async def test_missing_and_bad_tokens_are_401(client, node_token):
    cases = [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer lightd_short"},  # under 20 characters
        {"Authorization": "Bearer notlightd_aaaaaaaaaaaaaaaaaaaaaaaaaa"},
        {"Authorization": "Bearer lightd_" + "x" * 43},  # well formed, unknown
        {"Authorization": f"Bearer {node_token}x"},
    ]
    for headers in cases:
        async with client.get("/network/ports", headers={"Accept": VENDOR, **headers}) as resp:
            assert resp.status == 401, headers
            assert "error" in await resp.json()


async def test_vendor_header_required_403(client, node_token):
    auth = {"Authorization": f"Bearer {node_token}"}
    for accept in (None, "application/json", "application/vnd.pkglatv2+json"):
        headers = dict(auth) if accept is None else {**auth, "Accept": accept}
        async with client.get("/network/ports", headers=headers) as resp:
            assert resp.status == 403
            assert "Accept" in (await resp.json())["error"]
    for accept in ("application/VND.PKGLATV1+JSON", "text/html, Application/vnd.pkglatv1+json;q=0.9"):
        async with client.get("/network/ports", headers={**auth, "Accept": accept}) as resp:
            assert resp.status == 200, accept


async def test_temporary_tokens(api, client):
    status, body = await api.post("/auth/tokens", json={"ttl_seconds": 60, "purpose": "api"})
    assert status == 201, body
    temp = body["token"]
    assert temp.startswith("lightd_") and parse_rfc3339(body["expires_at"]) > time.time()
    temp_api = Api(client, {"Authorization": f"Bearer {temp}", "Accept": VENDOR})
    assert (await temp_api.get("/network/ports"))[0] == 200
    # a temporary token cannot mint more tokens
    assert (await temp_api.post("/auth/tokens", json={}))[0] == 403
    # tokens are stored hashed, never in clear
    row = await client.app[keys.STORE].db.execute_fetchall("SELECT hash FROM tokens")
    assert all(temp not in r[0] for r in row)


async def test_token_purpose_and_scope(api, client):
    _, ws_only = await api.post("/auth/tokens", json={"purpose": "websocket"})
    ws_api = Api(client, {"Authorization": f"Bearer {ws_only['token']}", "Accept": VENDOR})
    status, body = await ws_api.get("/network/ports")
    assert status == 403  # token confusion: a socket token is no API token
    status, body = await api.post("/auth/tokens", json={"container": "nope"})
    assert status == 404


async def test_expired_token_is_401(api, client):
    _, body = await api.post("/auth/tokens", json={"ttl_seconds": 1})
    temp_api = Api(client, {"Authorization": f"Bearer {body['token']}", "Accept": VENDOR})
    assert (await temp_api.get("/network/ports"))[0] == 200
    await asyncio.sleep(1.2)
    status, body = await temp_api.get("/network/ports")
    assert status == 401 and "expired" in body["error"]


async def test_bad_token_requests(api):
    for payload in ({"ttl_seconds": 0}, {"ttl_seconds": 86_401}, {"ttl_seconds": "10"}, {"purpose": "root"}, {"x": 1}):
        status, body = await api.post("/auth/tokens", json=payload)
        assert status == 400, (payload, body)
        assert "error" in body


async def test_unknown_route_and_method(api):
    status, body = await api.get("/no/such/route")
    assert status == 404 and "error" in body
    status, body = await api.call("PATCH", "/network/ports")
    assert status == 405 and "error" in body


async def test_body_over_limit_is_413(aiohttp_client, make_config, auth_headers):
    client = await aiohttp_client(create_app(make_config(api={"max_body_bytes": 2048})))
    api = Api(client, auth_headers)
    status, body = await api.post("/network/ports", data=b"{" + b" " * 5000 + b"}",
                                  headers={"Content-Type": "application/json"})
    assert status == 413 and "error" in body


async def test_store_survives_restart(aiohttp_client, config, auth_headers):
    client = await aiohttp_client(create_app(config))
    api = Api(client, auth_headers)
    assert (await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 7777}))[0] == 201
    status, volume = await api.post("/volumes")
    await client.close()
    client = await aiohttp_client(create_app(config))
    api = Api(client, auth_headers)
    _, ports = await api.get("/network/ports")
    assert [p["port"] for p in ports["ports"]] == [7777]
    assert (await api.get(f"/volumes/{volume['volume_id']}"))[0] == 200
    assert await client.app[keys.STORE].schema_version() >= 1


async def test_long_expired_tokens_are_forgotten(api, client):
    store = client.app[keys.STORE]
    await store.insert_token("old-hash", None, "all", 0.0, 1.0)  # expired in 1970
    await store.insert_token("recent-hash", None, "all", 0.0, time.time() - 5)
    assert (await api.post("/auth/tokens", json={}))[0] == 201
    assert await store.get_token("old-hash") is None
    assert await store.get_token("recent-hash") is not None  # still answers "token expired"
