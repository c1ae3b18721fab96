"""Bad input over every route of every compat front end, enumerated from the mounted applications' routers
(a new route is swept automatically): malformed and wrongly typed bodies, hostile path parameters and query
values. Each front end answers in its own error shape; what holds for all of them is: never a 5xx, and no
Docker container is left behind by a refused request."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any

from aiohttp import web

from lightd.app import create_app
from tests.conftest import Api
from tests.reliability.sweep_helpers import docker_names
from tests.servers.helpers import create_server

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "application/json"),
    (b"[]", "application/json"),
    (b'"text"', "application/json"),
    (b"123", "application/json"),
    (b"null", "application/json"),
    (b'{"a":' * 200 + b"1" + b"}" * 200, "application/json"),
    (b'{"name": 123, "hostname": [], "image": {}, "vmid": "abc", "memory": "lots", "cores": -1, "command": 5,'
     b' "template": null, "ports": "x", "priority": 9, "path": 1, "key": false, "lines": "many"}', "application/json"),
    (b'{"name": "\\u0000\\ud800", "hostname": "../../etc", "image": "ubuntu:\\n", "template": "..", "vmid": -5}',
     "application/json"),
    (b"\xff\xfe not utf-8", "application/json"),
    (b"name=x&vmid=abc", "application/x-www-form-urlencoded"),
]
PATH_VALUES = ["..", "%2e%2e%2f..", "a\x00b", "x" * 300, "\u202e\u0000", "-1", "99999999999999999999", "1.5", " ",
               "nope"]
QUERIES = [{"range": "forever", "interval": "-1s", "limit": "-5", "offset": "x", "tail": "abc", "status": "\x00",
            "sort": "1;drop", "order": "sideways", "force": "maybe", "timeout": "NaN", "purge": "2", "q": "x" * 5000,
            "lines": "-1", "follow": "perhaps"},
           # digits that str.isdigit() accepts and int() refuses
           {"limit": "\u00b2", "offset": "\u0663", "tail": "\u00b2", "timeout": "\u00b2", "lines": "\u00b2",
            "hours": "\u00b2"}]
# Sockets and streams: a plain GET gets a 4xx (no upgrade) or would hold the connection open.
SKIP = re.compile(r"/socket\.io/|/ws/|/ws$|/logs.*follow")


def compat_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, full path template) of every route of every mounted front end."""
    found = []
    for resource in app.router.resources():
        info = resource.get_info()
        sub, prefix = info.get("app"), info.get("prefix")
        if sub is None or not str(prefix).startswith("/compat/"):
            continue
        for route in sub.router.routes():
            sub_info = route.resource.get_info() if route.resource is not None else {}
            path = sub_info.get("path") or sub_info.get("formatter")
            if path is None or route.method in ("HEAD", "*"):
                continue
            found.append((route.method, path if path.startswith(prefix) else prefix + path))
    return found


def fill(path: str, value: str, vmid: str | None = None) -> str:
    def one(match: re.Match[str]) -> str:
        return urllib.parse.quote(vmid if vmid is not None and match.group(1) == "vmid" else value, safe="")

    return _PARAM.sub(one, path)


async def test_every_compat_route_refuses_bad_input_without_a_5xx(aiohttp_client, docker_config, node_token,
                                                                  auth_headers, container_prefix):
    client = await aiohttp_client(create_app(docker_config))
    routes = compat_routes(client.app)
    prefixes = {path.split("/")[2] for _, path in routes}
    assert prefixes == {"lxc-tools", "lxd-panel", "proxicloud", "container-codes"}, prefixes
    headers = {"Authorization": f"Bearer {node_token}"}
    failures: list[str] = []
    statuses: list[int] = []

    async def call(method: str, path: str, **kwargs: Any) -> None:
        try:
            async with client.request(method, path, headers={**headers, **kwargs.pop("headers", {})},
                                      timeout=15, **kwargs) as resp:
                await resp.read()
                statuses.append(resp.status)
                if resp.status >= 500:
                    failures.append(f"{method} {path} {kwargs.get('params') or ''} -> {resp.status}")
        except asyncio.TimeoutError:
            failures.append(f"{method} {path}: no answer in 15 s")

    swept = 0
    for method, template in routes:
        if SKIP.search(template):
            continue
        swept += 1
        if method in BODY_METHODS:
            for body, content_type in BODIES:
                await call(method, fill(template, "nope"), data=body, headers={"Content-Type": content_type})
        if _PARAM.search(template):
            for value in PATH_VALUES:
                await call(method, fill(template, value))
        for query in QUERIES:
            await call(method, fill(template, "nope"), params=query)
    # The bodies again, on a container that exists (its name, and its ProxiCloud vmid), so that they reach
    # the validation behind the lookup. No DELETE: it may rightly ignore a body and remove the container.
    await create_server(Api(client, auth_headers), "sweep", startup_command="sleep 1000")
    async with client.get("/compat/proxicloud/api/containers", headers=headers) as resp:
        vmid = str(next(c["vmid"] for c in (await resp.json())["containers"] if c["name"] == "sweep"))
    for method, template in routes:
        if SKIP.search(template) or method not in ("POST", "PUT", "PATCH") or not _PARAM.search(template):
            continue
        for body, content_type in BODIES:
            await call(method, fill(template, "sweep", vmid), data=body, headers={"Content-Type": content_type})
    assert swept > 60, swept
    assert not failures, "\n".join(failures[:40])
    assert statuses.count(400) > 100  # the bodies reached the front ends' validation, not only a 404
    await asyncio.sleep(1)  # anything a refused create might have started in the background
    assert docker_names(container_prefix) == [f"{container_prefix}sweep"]
