"""Console socket refusals reach browsers (issue 11, item 13): an upgrade request with a bad token, for the
wrong container or for an unknown container is upgraded and then closed with 4401/4403/4404 and a reason
(a browser cannot read the status of a refused handshake). A plain GET keeps the HTTP 401/403/404."""

from __future__ import annotations

import asyncio
import time

from lightd import keys
from tests.api.ws_helpers import Closed, Console, mint
from tests.reliability.sweep_helpers import raw_ws_handshake, read_close_code
from tests.servers.helpers import create_server


async def refusal(client, path: str, headers: dict[str, str] | None = None) -> Closed:
    """Connect (the upgrade must succeed) and read until the server closes; the close."""
    ws = await client.ws_connect(path, headers=headers or {})  # WSServerHandshakeError: refused before it
    return await Console(ws).closed(timeout=10)


async def test_refusals_are_close_codes_after_the_upgrade(dapi, dclient, node_token):
    await create_server(dapi, "w1")
    await create_server(dapi, "w2")
    other = await mint(dapi, "w2")
    api_token = await mint(dapi, "w1", purpose="api")
    expired = await mint(dapi, "w1", ttl=1)
    await asyncio.sleep(1.2)
    bus, sockets = dclient.app[keys.EVENTS], dclient.app[keys.CONSOLE_SOCKETS]
    subscribers, tasks = len(bus._subscribers), len(dclient.app[keys.TASKS])

    cases = [
        ("/ws/w1", {}, 4401, "missing token"),
        ("/ws/w1?token=lightd_not_a_real_token_at_all", {}, 4401, "invalid token"),
        ("/ws/w1?token=short", {}, 4401, "invalid token"),
        (f"/ws/w1?token={expired}", {}, 4401, "token expired"),
        ("/ws/w1", {"Authorization": "Bearer lightd_xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, 4401, "invalid token"),
        (f"/ws/w1?token={other}", {}, 4403, "not valid"),
        (f"/ws/w1?token={api_token}", {}, 4403, "not valid"),
        (f"/ws/nope?token={node_token}", {}, 4404, "container not found"),
        ("/ws/%C3%BC%0Aevil", {"Authorization": f"Bearer {node_token}"}, 4404, "container not found"),
    ]
    for path, headers, code, reason in cases:
        closed = await refusal(dclient, path, headers)
        assert (closed.code, reason in closed.reason) == (code, True), (path, closed.code, closed.reason)

    # a plain GET (no upgrade) still gets the HTTP status and the error shape
    for path, headers, code, _ in cases:
        async with dclient.get(path, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == code - 4000 and body["code"] in ("unauthorized", "forbidden", "not_found"), body

    # refused sockets leave nothing behind
    assert sockets.count("w1") == 0 and len(bus._subscribers) == subscribers
    await asyncio.sleep(0.2)
    assert len(dclient.app[keys.TASKS]) <= tasks


async def test_query_token_and_bearer_header_both_open_the_socket(dapi, dclient, node_token):
    await create_server(dapi, "w3")
    mine = await mint(dapi, "w3")
    for path, headers in [(f"/ws/w3?token={node_token}", {}), (f"/ws/w3?token={mine}", {}),
                          ("/ws/w3", {"Authorization": f"Bearer {node_token}"}),
                          ("/ws/w3", {"Authorization": f"Bearer {mine}"})]:
        ws = await dclient.ws_connect(path, headers=headers)
        assert (await Console(ws).next())["event"] == "stats", path
        await ws.close()
    # a plain GET with a good token is told to upgrade
    async with dclient.get(f"/ws/w3?token={node_token}") as resp:
        assert resp.status == 400 and "upgrade" in (await resp.json())["error"]


async def test_a_refused_client_that_never_answers_the_close_is_dropped(dapi, dclient):
    """The close handshake of a refusal is bounded: a client that never answers is disconnected."""
    await create_server(dapi, "w4")
    host, port = dclient.host, dclient.port
    reader, writer = await raw_ws_handshake(host, port, "/ws/w4?token=lightd_not_a_real_token_at_all")
    started = time.monotonic()
    assert await read_close_code(reader, timeout=10) == 4401
    try:
        # we never send our close frame: the daemon ends the connection by itself
        assert await asyncio.wait_for(reader.read(), 15) == b""
        assert time.monotonic() - started < 12
    finally:
        writer.close()


async def test_revoked_and_single_use_tokens_are_refused_with_4401(dapi, dclient):
    await create_server(dapi, "w5")
    status, body = await dapi.post("/auth/tokens", json={"container": "w5", "purpose": "websocket",
                                                         "remove_on_use": True})
    assert status == 201, body
    ws = await dclient.ws_connect(f"/ws/w5?token={body['token']}")
    assert (await Console(ws).next())["event"] == "stats"
    # used once: a second connection is refused, as a close code a browser can read
    assert (await refusal(dclient, f"/ws/w5?token={body['token']}")).code == 4401
    await ws.close()
