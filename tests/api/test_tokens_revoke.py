"""Temporary tokens can be listed (never their value or hash) and revoked by the node token (issue 10,
item 12): a revoked token is refused at once, and its open console sockets are closed."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import aiosqlite

from lightd import keys
from lightd.store import MIGRATIONS, Store
from tests.api.ws_helpers import Console, connect, mint
from tests.conftest import VENDOR, Api
from tests.servers.helpers import create_server


def bearer(client, token: str) -> Api:
    return Api(client, {"Authorization": f"Bearer {token}", "Accept": VENDOR})


async def test_list_then_revoke_is_401_at_once(api, client):
    status, first = await api.post("/auth/tokens", json={"purpose": "api", "ttl_seconds": 600})
    assert status == 201 and len(first["id"]) == 16, first
    status, second = await api.post("/auth/tokens", json={})
    assert status == 201 and second["id"] != first["id"]
    temp = bearer(client, first["token"])
    assert (await temp.get("/network/ports"))[0] == 200

    status, listing = await api.get("/auth/tokens")
    assert status == 200 and listing["count"] == 2
    assert [t["id"] for t in listing["tokens"]] == [first["id"], second["id"]]
    assert set(listing["tokens"][0]) == {"id", "purpose", "container", "created_at", "expires_at", "remove_on_use"}
    assert listing["tokens"][0]["purpose"] == "api" and listing["tokens"][0]["expires_at"] == first["expires_at"]
    # neither a token nor its hash appears anywhere in the listing
    text = str(listing)
    for issued in (first, second):
        assert issued["token"] not in text
        assert hashlib.sha256(issued["token"].encode()).hexdigest() not in text

    status, body = await api.delete(f"/auth/tokens/{first['id']}")
    assert status == 200 and body["revoked"]["id"] == first["id"] and body["sockets_closed"] == 0, body
    status, body = await temp.get("/network/ports")
    assert status == 401 and body["code"] == "unauthorized", body
    status, listing = await api.get("/auth/tokens")
    assert [t["id"] for t in listing["tokens"]] == [second["id"]]
    status, body = await api.delete(f"/auth/tokens/{first['id']}")
    assert status == 404 and body["code"] == "not_found"
    # the other token still works: revocation is by id, one token at a time
    assert (await bearer(client, second["token"]).get("/network/ports"))[0] == 200


async def test_only_the_node_token_lists_and_revokes(api, client):
    _, own = await api.post("/auth/tokens", json={"purpose": "all"})
    temp = bearer(client, own["token"])
    status, body = await temp.get("/auth/tokens")
    assert status == 403 and body["code"] == "forbidden", body
    status, body = await temp.delete(f"/auth/tokens/{own['id']}")  # not even itself
    assert status == 403, body
    assert (await temp.get("/network/ports"))[0] == 200
    anonymous = Api(client, {"Accept": VENDOR})
    assert (await anonymous.get("/auth/tokens"))[0] == 401
    assert (await anonymous.delete(f"/auth/tokens/{own['id']}"))[0] == 401


async def test_expired_tokens_are_not_listed(api, client):
    store = client.app[keys.STORE]
    await store.insert_token("expired-hash", None, "all", 0.0, time.time() - 5)
    status, listing = await api.get("/auth/tokens")
    assert status == 200 and listing["count"] == 0


async def test_tokens_from_before_the_migration_get_an_id(tmp_path: Path):
    path = tmp_path / "old.db"
    before_ids = next(i for i, step in enumerate(MIGRATIONS) if "ADD COLUMN id" in step)
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute(f"INSERT INTO schema_version (version) VALUES ({before_ids})")
        for step in MIGRATIONS[:before_ids]:
            await db.executescript(step)
        await db.execute("INSERT INTO tokens (hash, container, purpose, created_at, expires_at) VALUES "
                         "('h1', NULL, 'all', ?, ?), ('h2', NULL, 'api', ?, ?)", (time.time(), time.time() + 600) * 2)
    store = Store(path)
    await store.open()
    try:
        rows = await store.live_tokens(time.time())
        assert len(rows) == 2 and all(len(r["id"]) == 16 for r in rows) and rows[0]["id"] != rows[1]["id"]
        assert "hash" not in rows[0]
        assert (await store.delete_token(rows[0]["id"]))["id"] == rows[0]["id"]
        assert await store.get_token("h1") is None or await store.get_token("h2") is None
    finally:
        await store.close()


async def test_revoking_closes_the_console_sockets_opened_with_the_token(dapi, dclient, node_token):
    await create_server(dapi, "rev")
    token = await mint(dapi, "rev", ttl=600)
    _, listing = await dapi.get("/auth/tokens")
    token_id = listing["tokens"][0]["id"]
    revoked_console = await connect(dclient, "rev", token)
    node_console = await connect(dclient, "rev", node_token)

    status, body = await dapi.delete(f"/auth/tokens/{token_id}")
    assert status == 200 and body["sockets_closed"] == 1, body
    closed = await revoked_console.closed(timeout=10)
    assert closed.code == 4401
    # the socket opened with the node token is untouched
    await node_console.send("request_logs", 5)
    await node_console.until(lambda f: f["event"] == "logs", timeout=10)
    # the revoked token is refused: upgraded, then closed 4401 (a browser sees the code)
    again = Console(await dclient.ws_connect(f"/ws/rev?token={token}"))
    assert (await again.closed()).code == 4401
    await node_console.close()
