"""The daemon's own listening ports never enter the port pool, and Container Codes' reverse proxy never
forwards to them (issue 10, item 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from lightd import keys
from lightd.app import create_app
from lightd.errors import ValidationFailed
from lightd.ports import PortSpec
from tests.compat.helpers import free_port
from tests.conftest import VENDOR, Api


@pytest.fixture
async def daemon(
    aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], auth_headers: dict[str, str],
    no_blocking_calls: None,
) -> AsyncIterator[dict[str, Any]]:
    """The main app on a known api.port and Container Codes on its own port, as `lightd serve` runs them."""
    api_port, cc_port = free_port(), free_port()
    config = make_config(api={"port": api_port}, compat={"container_codes": {"enabled": True, "port": cc_port}})
    client = await aiohttp_client(create_app(config), server_kwargs={"port": api_port})
    yield {"api": Api(client, auth_headers), "app": client.app, "api_port": api_port, "cc_port": cc_port}


async def test_pool_refuses_the_daemons_own_ports_on_any_ip(daemon):
    api: Api = daemon["api"]
    for port in (daemon["api_port"], daemon["cc_port"]):
        for ip in ("127.0.0.1", "0.0.0.0", "10.1.2.3", "::1", "::"):
            for protocol in ("tcp", "udp"):
                status, body = await api.post("/network/ports", json={"ip": ip, "port": port, "protocol": protocol})
                assert status == 400, (ip, port, body)
                assert body["code"] == "validation_failed" and body["error"].startswith("port:"), body
    status, body = await api.get("/network/ports")
    assert body["count"] == 0
    # a front end that is not enabled does not listen: its default port is an ordinary port
    status, body = await api.post("/network/ports", json={"ip": "127.0.0.1", "port": 5000})
    assert status == 201, body


async def test_rows_from_before_are_neither_handed_out_nor_claimed(daemon):
    """A pool row for an own port written before the check existed (straight into the store)."""
    app = daemon["app"]
    await app[keys.STORE].insert_port("127.0.0.1", daemon["api_port"], "tcp")
    pool = app[keys.PORTS]
    with pytest.raises(ValidationFailed, match="own listening ports"):
        await pool.claim([PortSpec(ip="127.0.0.1", port=daemon["api_port"])], "web")
    status, body = await daemon["api"].get("/network/ports/random")
    assert status == 404, body


async def test_proxy_never_forwards_to_the_daemons_own_listeners(daemon, node_token):
    """The attack: a route whose upstream is the native API, with the pool (here a row that predates the
    check, held by a container) vouching for the address. The route even adds the token headers the proxy
    strips from the client, so a forward would be an authenticated native API call."""
    app = daemon["app"]
    store = app[keys.STORE]
    # name -> (port, a path that answers 200 there with the token)
    targets = {"main": (daemon["api_port"], "/containers"), "cc": (daemon["cc_port"], "/api/health")}
    for port, _ in targets.values():
        await store.insert_port("127.0.0.1", port, "tcp")
    assert await store.claim_ports([("127.0.0.1", port, "tcp") for port, _ in targets.values()], "ghost")

    base = f"http://127.0.0.1:{daemon['cc_port']}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {node_token}"}) as http:
        for name, (port, path) in targets.items():
            async with http.post(base + "/api/proxy/upstreams", json={
                    "name": name, "servers": [{"address": f"127.0.0.1:{port}"}]}) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(base + "/api/proxy/routes", json={
                    "path": path, "upstream": name,
                    "headers": {"Authorization": f"Bearer {node_token}", "Accept": VENDOR}}) as resp:
                assert resp.status == 201, await resp.text()
        for name, (_, path) in targets.items():
            async with http.get(base + "/proxy" + path) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 502, (name, body)
        async with http.get(base + "/api/proxy/stats") as resp:
            stats = await resp.json()
        # never contacted: no server of either upstream took a request
        for name in targets:
            assert all(s["requests"] == 0 for s in stats["upstreams"][name]["servers"]), stats
