"""Shared by the compat front ends' tests: a free loopback port, the HTTP client of a front end served on its
own port, and the daemon serving it (each test file's subclass adds what its front end needs)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from lightd.config import Config
from tests.conftest import Api


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ForeignClient:
    """Requests to `self.base` with `self.http`; bodies are read by `read` (JSON by default)."""

    base: str
    http: aiohttp.ClientSession

    async def read(self, resp: aiohttp.ClientResponse) -> Any:
        return await resp.json(content_type=None)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            return resp.status, await self.read(resp)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kwargs)


@dataclass
class FrontEndDaemon(ForeignClient):
    """One daemon (the real app) serving a compat front end on its own port: made by the `serve_front_end`
    fixture (tests/compat/conftest.py); each test file's subclass adds what its front end needs."""

    base: str  # the front end's own port
    http: aiohttp.ClientSession
    api: Api  # the native API on the main port
    main: TestClient  # the main port's test client (closing it stops the daemon, own port included)
    config: Config
    token: str  # the node token
