"""CORS on the native API and on every compat front end (mounted under /compat/<name> and on its own port):
preflights answered before authentication, allowed and refused origins, no `*` for a credentialed request,
and the Origin check of every WebSocket kind (console, LXD monitor, Container Codes updates, Socket.IO)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from lightd.app import create_app
from lightd.compat.serving import FRONT_ENDS
from lightd.config import ConfigError, parse_config
from tests.compat.helpers import free_port

PAGE = "https://ui.example.com"
EVIL = "https://evil.example.net"
PREFIXES = {spec.name: spec.prefix for spec in FRONT_ENDS}
# Each front end's 403 body, in its own shape.
FORBIDDEN_SHAPES: dict[str, Callable[[Any], bool]] = {
    "lxc_tools": lambda body: isinstance(body["error"], str),
    "lxd_panel": lambda body: isinstance(body["detail"], str),
    "proxicloud": lambda body: body["success"] is False and isinstance(body["error"], str),
    "container_codes": lambda body: body["error"]["code"] == "FORBIDDEN",
}


@dataclass
class Answer:
    status: int
    headers: Any
    body: Any


class Daemon:
    """The real app with every front end on its own port; requests by path on either port."""

    def __init__(self, client: TestClient, ports: dict[str, int], token: str) -> None:
        self.client = client
        self.ports = ports
        self.token = token
        self.http = aiohttp.ClientSession()

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    async def request(self, method: str, where: str, path: str, origin: str | None = None, *,
                      token: bool = False, **headers: str) -> Answer:
        """`where`: "main" (the native API), "<name>" (its own port) or "mounted:<name>"."""
        if origin is not None:
            headers["Origin"] = origin
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        if where == "main" or where.startswith("mounted:"):
            prefix = PREFIXES[where.partition(":")[2]] if where != "main" else ""
            call = self.client.request(method, prefix + path, headers=headers)
        else:
            call = self.http.request(method, self.url(where, path), headers=headers)
        async with call as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.read()
            return Answer(resp.status, resp.headers, body)

    async def preflight(self, where: str, origin: str, path: str = "/api/health",
                        asks: str = "content-type") -> Answer:
        return await self.request("OPTIONS", where, path, origin, **{
            "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asks})


@pytest.fixture
async def daemon(aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], node_token: str,
                 no_blocking_calls: None) -> Any:
    made: list[Daemon] = []

    async def make(api: list[str] | None = None, **compat_settings: Any) -> Daemon:
        ports = {spec.name: free_port() for spec in FRONT_ENDS}
        compat = {name: {"enabled": True, "port": port, **compat_settings.get(name, {})}
                  for name, port in ports.items()}
        config = make_config(api={"cors_origins": api or []}, compat=compat)
        made.append(Daemon(await aiohttp_client(create_app(config)), ports, node_token))
        return made[-1]

    yield make
    for each in made:
        await each.http.close()


def assert_preflight_allowed(answer: Answer, allow_origin: str, credentials: bool) -> None:
    assert answer.status == 204, (answer.status, answer.body)  # not 401 (auth) nor 405 (no OPTIONS route)
    assert answer.headers["Access-Control-Allow-Origin"] == allow_origin
    assert answer.headers.get("Access-Control-Allow-Credentials") == ("true" if credentials else None)
    assert answer.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    allowed = {name.strip().lower() for name in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type", "x-request-id"} <= allowed
    assert answer.headers["Access-Control-Max-Age"] == "7200"
    assert varies_by_origin(answer)


def varies_by_origin(answer: Answer) -> bool:
    return "origin" in ",".join(answer.headers.getall("Vary", [])).lower()


def assert_no_cors(answer: Answer) -> None:
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_origins_in_config_are_validated():
    config = parse_config({"api": {"cors_origins": ["HTTPS://Panel.Example.com:8443", "http://[::1]:3000"]}})
    assert config.api.cors_origins == ["https://panel.example.com:8443", "http://[::1]:3000"]
    assert config.compat.lxc_tools.cors_origins == ["*"] and config.compat.container_codes.cors_origins == ["*"]
    for bad in ("https://panel.example.com/", "panel.example.com", "https://a/b", "null", "", "*.example.com"):
        with pytest.raises(ConfigError, match="cors_origins"):
            parse_config({"api": {"cors_origins": [bad]}})
    with pytest.raises(ConfigError, match="static_dir"):
        parse_config({"compat": {"lxd_panel": {"port": 8000, "static_dir": "relative/ui"}}})


async def test_native_api_refuses_every_origin_by_default(client: TestClient, auth_headers: dict[str, str]):
    async with client.options("/containers", headers={"Origin": PAGE, "Access-Control-Request-Method": "GET"}) as resp:
        assert resp.status == 403  # not 401: the preflight is answered before authentication
        assert (await resp.json())["code"] == "forbidden"
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with client.get("/containers", headers={**auth_headers, "Origin": PAGE}) as resp:
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    async with client.options("/containers") as resp:  # no preflight (no Origin): as before
        assert resp.status == 405


async def test_native_api_with_a_listed_panel(daemon: Callable[..., Any], auth_headers: dict[str, str]):
    d = await daemon(api=[PAGE])
    assert_preflight_allowed(await d.preflight("main", PAGE, "/containers"), PAGE, credentials=True)
    refused = await d.preflight("main", EVIL, "/containers")
    assert refused.status == 403 and refused.body["code"] == "forbidden"
    assert_no_cors(refused)
    listed = await d.request("GET", "main", "/containers", PAGE, **auth_headers)
    assert listed.status == 200 and listed.headers["Access-Control-Allow-Origin"] == PAGE
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Request-Id" in listed.headers["Access-Control-Expose-Headers"]
    # errors carry the headers too, so the page can read why
    unauthorized = await d.request("GET", "main", "/containers", PAGE)
    assert unauthorized.status == 401 and unauthorized.headers["Access-Control-Allow-Origin"] == PAGE
    other = await d.request("GET", "main", "/containers", EVIL, **auth_headers)
    assert other.status == 200 and varies_by_origin(other)
    assert_no_cors(other)


@pytest.mark.parametrize("mounted", [False, True], ids=["own-port", "mounted"])
async def test_front_ends_allow_any_origin_by_default(daemon: Callable[..., Any], mounted: bool):
    d = await daemon()
    for name in PREFIXES:
        where = f"mounted:{name}" if mounted else name
        # preflights need no token, also on Container Codes' own port where every request needs one
        assert_preflight_allowed(await d.preflight(where, PAGE), "*", credentials=False)
        # SECURITY: a request with credentials never gets `*`, nor credentials for a wildcard origin
        announced = await d.preflight(where, PAGE, asks="authorization, content-type")
        assert_preflight_allowed(announced, PAGE, credentials=False)
        with_token = await d.request("GET", where, "/api/health", PAGE, token=True)
        assert with_token.status == 200, (name, with_token.body)
        assert with_token.headers["Access-Control-Allow-Origin"] == PAGE
        assert "Access-Control-Allow-Credentials" not in with_token.headers
        cookie = await d.request("GET", where, "/api/health", PAGE, token=True, Cookie="session=1")
        assert cookie.headers["Access-Control-Allow-Origin"] == PAGE
    plain = await d.request("GET", "lxc_tools", "/api/health", PAGE)
    assert plain.status == 200 and plain.headers["Access-Control-Allow-Origin"] == "*"
    # the main port's own policy (api.cors_origins: none) is not the mounted front ends'
    assert (await d.preflight("main", PAGE, "/containers")).status == 403


async def test_front_ends_with_listed_origins(daemon: Callable[..., Any]):
    listed = {"cors_origins": [PAGE]}
    d = await daemon(lxc_tools=listed, proxicloud=listed, container_codes=listed,
                     lxd_panel={**listed, "require_token": True})
    for name, shape in FORBIDDEN_SHAPES.items():
        for where in (name, f"mounted:{name}"):
            refused = await d.preflight(where, EVIL)
            assert refused.status == 403 and shape(refused.body), (where, refused.body)
            assert_no_cors(refused)
            # a refused origin's request is served; the browser withholds it (no CORS headers)
            served = await d.request("GET", where, "/api/health", EVIL, token=True)
            assert served.status == 200
            assert_no_cors(served)
            # before require_token's check too (lxd_panel)
            assert_preflight_allowed(await d.preflight(where, PAGE), PAGE, credentials=True)
            ok = await d.request("GET", where, "/api/health", PAGE, token=True)
            assert ok.headers["Access-Control-Allow-Origin"] == PAGE
            assert ok.headers["Access-Control-Allow-Credentials"] == "true"


async def handshake_status(connect: Any) -> int:
    """101 when the socket opens (then closed), else the refused handshake's HTTP status."""
    try:
        ws = await connect
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_websockets_check_the_origin(daemon: Callable[..., Any], node_token: str):
    listed = {"cors_origins": [PAGE]}
    d = await daemon(api=[PAGE], lxc_tools=listed, lxd_panel=listed, container_codes=listed)
    # the console socket: upgraded, then closed with 4403 (an allowed origin reaches the container check: 4404)
    for origin, code in ((EVIL, 4403), (PAGE, 4404), (None, 4404)):
        ws = await d.client.ws_connect(f"/ws/nosuch?token={node_token}", origin=origin)
        await ws.receive()
        assert ws.close_code == code, origin
    # plain sockets of the front ends: 403 before the upgrade, in their own port and mounted
    token_query = f"?token={node_token}"
    sockets = {"lxd_panel": "/ws/monitor", "container_codes": "/api/ws/updates" + token_query}
    for name, path in sockets.items():
        for origin, status in ((EVIL, 403), (PAGE, 101), (None, 101), (d.url(name, "").rstrip("/"), 101)):
            assert await handshake_status(d.http.ws_connect(d.url(name, path), origin=origin)) == status, (name, origin)
        bearer = {"Authorization": f"Bearer {node_token}"}
        mounted = d.client.ws_connect(PREFIXES[name] + path, origin=EVIL, headers=bearer)
        assert await handshake_status(mounted) == 403, name
    # Socket.IO (engine.io's own check, with lightd.cors's answer): polling and the socket transport
    polling = "/socket.io/?EIO=4&transport=polling"
    refused = await d.request("GET", "lxc_tools", polling, EVIL)
    assert refused.status == 400
    assert_no_cors(refused)
    allowed = await d.request("GET", "lxc_tools", polling, PAGE)
    assert allowed.status == 200 and allowed.headers["Access-Control-Allow-Origin"] == PAGE
    assert allowed.headers.getall("Access-Control-Allow-Credentials") == ["true"]
    sid = json.loads(allowed.body[1:])["sid"]  # the engine.io session is closed again (packet "1")
    async with d.http.post(d.url("lxc_tools", f"{polling}&sid={sid}"), data=b"1") as closed:
        assert closed.status == 200
    assert_preflight_allowed(await d.preflight("lxc_tools", PAGE, polling), PAGE, credentials=True)
    websocket = d.url("lxc_tools", "/socket.io/?EIO=4&transport=websocket")
    assert await handshake_status(d.http.ws_connect(websocket, origin=EVIL)) == 400
    assert await handshake_status(d.http.ws_connect(websocket, origin=PAGE)) == 101
