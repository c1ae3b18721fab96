"""GET /containers and GET /volumes: filters, pages in a stable order, opaque cursors (against the real engine);
and one answer to an unknown query parameter on every native route."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import orjson

from lightd import keys
from tests.conftest import Api
from tests.reliability.sweep_helpers import route_params
from tests.reliability.test_bad_input_sweep import _PARAM, ROUTES
from tests.servers.helpers import create_server, make_volume, wait_state


async def pages(api: Api, path: str, kind: str, limit: int, **filters: str) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor."""
    answers, cursor = [], None
    while True:
        params = {**filters, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        status, body = await api.get(path, params=params)
        assert status == 200, body
        assert body["count"] == len(body[kind]) <= limit
        answers.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return answers


# -- unknown query parameters ----------------------------------------------------------------------------
async def test_every_native_route_refuses_an_unknown_query_parameter_the_same_way(api, config):
    values = route_params()
    swept = 0
    for method, path, _handler in ROUTES:
        if path == "/ws/{container_id}":
            continue  # reads its own query (?token=, ?batch=): below
        url = _PARAM.sub(lambda m: values[m.group(1)], path) + "?bogus_param=1"
        status, body = await api.call(method, url)
        swept += 1
        assert status == 400, (method, path, status, body)
        assert body["code"] == "validation_failed" and "bogus_param" in body["error"], (method, path, body)
        assert body["details"] == {"field": "bogus_param", "errors": [{"field": "bogus_param", "message": "unknown query parameter"}]}
    assert swept > 40


async def test_declared_query_parameters_still_work_and_an_unknown_one_next_to_them_does_not(api, client):
    assert (await api.get("/network/ports", params={"protocol": "tcp", "in_use": "false"}))[0] == 200
    status, body = await api.get("/network/ports", params={"protocol": "tcp", "protcol": "udp"})
    assert status == 400 and "protcol" in body["error"]
    volume = await make_volume(api)
    assert (await api.get(f"/volumes/{volume}/files", params={"path": ""}))[0] == 200
    assert (await api.get("/containers", params={"limit": "5", "state": "offline"}))[0] == 200
    assert (await api.get("/volumes", params={"limit": "5", "state": "unused"}))[0] == 200
    # the public routes too: ping reads no parameter
    async with client.get("/api/v1/public/ping?x=1") as resp:
        assert resp.status == 400 and (await resp.json())["code"] == "validation_failed"
    async with client.get("/api/v1/public/ping") as resp:
        assert resp.status == 200
    # an unauthenticated request learns nothing of a route's parameters: 401 first
    async with client.get("/containers?bogus=1") as resp:
        assert resp.status == 401


async def test_console_socket_keeps_its_token_and_batch_parameters(dapi, dclient, node_token):
    await create_server(dapi, "sock")
    ws = await dclient.ws_connect(f"/ws/sock?token={node_token}&batch=1")
    message = await ws.receive_json(timeout=10)
    assert message["event"] in ("logs", "stats", "event", "daemon_message"), message
    await ws.close()


# -- GET /containers ------------------------------------------------------------------------------------
async def test_containers_pages_follow_a_stable_order_and_filters(dapi):
    ids = ["lst-c", "lst-a", "lst-e", "lst-b", "lst-d"]
    for internal_id in ids:
        await create_server(dapi, internal_id)
    await dapi.post("/containers/lst-e/start")
    await wait_state(dapi, "lst-e", "running")

    status, whole = await dapi.get("/containers")
    assert status == 200
    order = [c["internal_id"] for c in whole["containers"]]
    assert order == ids  # created one after the other: oldest first
    order_keys = [(c["created_at"], c["internal_id"]) for c in whole["containers"]]
    assert order_keys == sorted(order_keys)
    assert whole["count"] == whole["total"] == 5 and whole["next_cursor"] is None

    answers = await pages(dapi, "/containers", "containers", 2)
    assert [len(a["containers"]) for a in answers] == [2, 2, 1]
    assert all(a["total"] == 5 for a in answers)
    assert [c["internal_id"] for a in answers for c in a["containers"]] == order
    assert [c for a in answers for c in a["containers"]] == whole["containers"]

    running = (await dapi.get("/containers", params={"state": "running"}))[1]
    assert [c["internal_id"] for c in running["containers"]] == ["lst-e"] and running["total"] == 1
    offline = await pages(dapi, "/containers", "containers", 3, state="offline")
    assert [c["internal_id"] for a in offline for c in a["containers"]] == ["lst-c", "lst-a", "lst-b", "lst-d"]
    ready = (await dapi.get("/containers", params={"install_state": "ready", "state": "offline"}))[1]
    assert ready["total"] == 4
    assert (await dapi.get("/containers", params={"install_state": "failed"}))[1]["containers"] == []


async def test_a_cursor_survives_changes_between_pages(dapi):
    for internal_id in ("cur-1", "cur-2", "cur-3", "cur-4"):
        await create_server(dapi, internal_id)
    first = (await dapi.get("/containers", params={"limit": "2"}))[1]
    assert [c["internal_id"] for c in first["containers"]] == ["cur-1", "cur-2"]
    # the last item of the page goes, and a newer server comes: the next page still starts after cur-2
    assert (await dapi.delete("/containers/cur-2"))[0] == 200
    await create_server(dapi, "cur-0")
    second = (await dapi.get("/containers", params={"limit": "2", "cursor": first["next_cursor"]}))[1]
    assert [c["internal_id"] for c in second["containers"]] == ["cur-3", "cur-4"]
    third = (await dapi.get("/containers", params={"limit": "2", "cursor": second["next_cursor"]}))[1]
    assert [c["internal_id"] for c in third["containers"]] == ["cur-0"] and third["next_cursor"] is None


async def test_bad_list_parameters_are_400_naming_them(api):
    for params, field in [({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"state": "exploded"}, "state"), ({"install_state": "done"}, "install_state"),
                          ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "W10"}, "cursor")]:
        status, body = await api.get("/containers", params=params)
        assert status == 400 and body["code"] == "validation_failed" and field in body["error"], (params, body)
    for params, field in [({"state": "running"}, "state"), ({"limit": "-1"}, "limit")]:
        status, body = await api.get("/volumes", params=params)
        assert status == 400 and field in body["error"], (params, body)
    # a volumes cursor is not a containers cursor
    await make_volume(api)
    await make_volume(api)
    cursor = (await api.get("/volumes", params={"limit": "1"}))[1]["next_cursor"]
    assert cursor
    status, body = await api.get("/containers", params={"cursor": cursor})
    assert status == 400 and "cursor" in body["error"]


async def test_unpaged_containers_answer_is_the_cached_one(dapi, dclient):
    await create_server(dapi, "cached")
    manager = dclient.app[keys.SERVERS]
    async with dapi.client.get("/containers", headers=dapi.headers) as resp:
        raw = await resp.read()
    assert raw == await manager.listing_json()


async def fresh_list(api: Api) -> list[dict[str, Any]]:
    """The cached unpaged answer, checked against the uncached paged one (the same servers, same order)."""
    status, cached = await api.get("/containers")
    assert status == 200, cached
    status, paged = await api.get("/containers", params={"limit": "1000"})
    assert status == 200, paged
    assert cached == paged, "the cached GET /containers differs from a fresh build"
    return cached["containers"]


async def test_unpaged_containers_answer_is_never_stale(dapi, dclient):
    manager = dclient.app[keys.SERVERS]
    await create_server(dapi, "stale-a")
    by_id = {c["internal_id"]: c for c in await fresh_list(dapi)}
    assert by_id["stale-a"]["state"] == "offline"
    keys_seen = [manager.changes.value]

    def key_moved() -> None:
        keys_seen.append(manager.changes.value)
        assert keys_seen[-1] != keys_seen[-2]

    # a PATCH (the stored spec and updated_at change)
    status, body = await dapi.call("PATCH", "/containers/stale-a", json={"startup_command": "sleep 2000"})
    assert status == 200, body
    key_moved()
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["startup_command"] == "sleep 2000"
    # state changes: the very next list shows what GET /containers/:id shows
    assert (await dapi.post("/containers/stale-a/start"))[0] == 202
    await wait_state(dapi, "stale-a", "running")
    key_moved()
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["state"] == "running"
    # a flag set in memory only (the engine lost the container), as engine_watch and recovery set it
    server = manager.get("stale-a")
    server.container_missing = True
    key_moved()
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["container_missing"] is True
    server.container_missing = False
    key_moved()
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["container_missing"] is False
    # a state moved in memory, its store write still pending, is already listed (no engine call involved:
    # only the bookkeeping moves, and moves back)
    moving = asyncio.ensure_future(server.set_state("paused"))
    await asyncio.sleep(0)  # set_state has moved the state and waits for its store write
    # what the route answers, with no turn of the loop that could let the store write finish first
    listed = orjson.loads(await manager.listing_json())["containers"]
    assert not moving.done() and listed[0]["state"] == "paused"
    await moving
    key_moved()
    await server.set_state("running")
    key_moved()
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["state"] == "running"
    assert (await dapi.post("/containers/stale-a/kill"))[0] == 202
    await wait_state(dapi, "stale-a", "offline")
    assert {c["internal_id"]: c for c in await fresh_list(dapi)}["stale-a"]["state"] == "offline"
    # servers made and deleted
    await create_server(dapi, "stale-b")
    key_moved()
    assert [c["internal_id"] for c in await fresh_list(dapi)] == ["stale-a", "stale-b"]
    assert (await dapi.delete("/containers/stale-a"))[0] == 200
    key_moved()
    assert [c["internal_id"] for c in await fresh_list(dapi)] == ["stale-b"]


# -- GET /volumes ---------------------------------------------------------------------------------------
async def test_volumes_pages_filters_and_users(dapi):
    made = [await make_volume(dapi) for _ in range(4)]
    await create_server(dapi, "vol-user", volume_id=made[1])

    whole = (await dapi.get("/volumes"))[1]
    assert [v["volume_id"] for v in whole["volumes"]] == made
    assert whole["count"] == whole["total"] == 4 and whole["next_cursor"] is None
    assert [v["containers"] for v in whole["volumes"]] == [[], ["vol-user"], [], []]

    answers = await pages(dapi, "/volumes", "volumes", 3)
    assert [v["volume_id"] for a in answers for v in a["volumes"]] == made
    assert [a["count"] for a in answers] == [3, 1]

    in_use = (await dapi.get("/volumes", params={"state": "in_use"}))[1]
    assert [v["volume_id"] for v in in_use["volumes"]] == [made[1]] and in_use["total"] == 1
    unused = await pages(dapi, "/volumes", "volumes", 2, state="unused")
    assert [v["volume_id"] for a in unused for v in a["volumes"]] == [made[0], made[2], made[3]]


def test_cursor_is_opaque_url_safe_text():
    from lightd.servers.listing import decode_cursor, encode_cursor

    cursor = encode_cursor("containers", (1700000000.123456, "srv-1"))
    assert urllib.parse.quote(cursor, safe="") == cursor
    assert decode_cursor("containers", cursor) == (1700000000.123456, "srv-1")


# -- the cached whole list: ETag, 304, gzip -------------------------------------------------------------
async def raw_get(api: Api, path: str, **headers: str) -> tuple[int, Any, bytes]:
    """An answer as sent (not decompressed)."""
    async with api.client.get(path, headers={**api.headers, **headers}, auto_decompress=False) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def test_unpaged_containers_answer_is_gzipped_for_clients_that_take_it_and_304_when_unchanged(dapi):
    import gzip

    for n in range(12):  # over GZIP_MIN_BYTES
        await create_server(dapi, f"gz-{n}")
    status, plain_headers, plain = await raw_get(dapi, "/containers", **{"Accept-Encoding": "identity"})
    assert status == 200 and "Content-Encoding" not in plain_headers
    assert plain_headers["Vary"] == "Accept-Encoding" and plain_headers["ETag"].startswith('"')
    assert len(orjson.loads(plain)["containers"]) == 12

    for taking in ("gzip", "deflate, gzip;q=0.5", "br, *", "GZIP"):
        status, headers, body = await raw_get(dapi, "/containers", **{"Accept-Encoding": taking})
        assert status == 200 and headers["Content-Encoding"] == "gzip", taking
        assert gzip.decompress(body) == plain and len(body) < len(plain)
        assert headers["ETag"] == plain_headers["ETag"][:-1] + '-gzip"'  # another representation, another tag
    for refusing in ("gzip;q=0", "identity", "br", "gzip;q=bogus", "gzip;q=0.000", "gzip;q=0, *", "*;q=0"):
        status, headers, body = await raw_get(dapi, "/containers", **{"Accept-Encoding": refusing})
        assert status == 200 and "Content-Encoding" not in headers and body == plain, refusing

    # the client has this answer: 304, no body (weak, listed and `*` forms too)
    etag = plain_headers["ETag"]
    gzip_etag = etag[:-1] + '-gzip"'
    for condition in (etag, f'"other", {etag}', f"W/{etag}", "*", gzip_etag):
        status, headers, body = await raw_get(dapi, "/containers", **{"If-None-Match": condition,
                                                                     "Accept-Encoding": "identity"})
        assert status == 304 and body == b"" and headers["ETag"] == etag, condition
        status, headers, body = await raw_get(dapi, "/containers", **{"If-None-Match": condition,
                                                                     "Accept-Encoding": "gzip"})
        assert status == 304 and body == b"" and headers["ETag"] == gzip_etag, condition
    status, _, body = await raw_get(dapi, "/containers", **{"If-None-Match": '"stale"', "Accept-Encoding": "identity"})
    assert status == 200 and body == plain

    # a change: a new ETag, and neither the old one nor the old gzip body is served again
    status, _ = await dapi.call("PATCH", "/containers/gz-3", json={"startup_command": "sleep 4242"})
    assert status == 200
    status, headers, body = await raw_get(dapi, "/containers", **{"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert status == 200 and headers["ETag"] not in (etag, gzip_etag)
    listed = {c["internal_id"]: c for c in orjson.loads(gzip.decompress(body))["containers"]}
    assert listed["gz-3"]["startup_command"] == "sleep 4242"
    # paged and filtered lists are built per request (no ETag), as before
    status, headers, _ = await raw_get(dapi, "/containers?limit=5")
    assert status == 200 and "ETag" not in headers


async def test_concurrent_first_gzip_askers_share_one_compression(api, monkeypatch):
    from lightd import http_cache

    for n in range(12):
        await create_server(api, f"gzc-{n}")
    made = []
    real = http_cache._gzip

    def counting(data: bytes) -> bytes:
        made.append(len(data))
        return real(data)

    monkeypatch.setattr(http_cache, "_gzip", counting)
    monkeypatch.setattr(http_cache, "GZIP_IN_THREAD_BYTES", 1)  # the thread path: askers wait on the lock
    answers = await asyncio.gather(*(raw_get(api, "/containers", **{"Accept-Encoding": "gzip"}) for _ in range(8)))
    assert {a[0] for a in answers} == {200} and len({a[2] for a in answers}) == 1
    assert len(made) == 1
