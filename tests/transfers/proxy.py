"""A test-only HTTP proxy between two nodes on loopback: forwards every request to the target, and can slow
the request bodies down (`rate`, bytes/s) or flip one byte of a body (`flip_at`: its offset)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class Proxy:
    def __init__(self, target: str, *, rate: float = 0, flip_at: int | None = None) -> None:
        self.target = target.rstrip("/")
        self.rate = rate
        self.flip_at = flip_at
        self.forwarded = 0
        self._server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> Proxy:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.close()

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        offset = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            if self.flip_at is not None and offset <= self.flip_at < offset + len(chunk):
                at = self.flip_at - offset
                chunk = chunk[:at] + bytes([chunk[at] ^ 0x01]) + chunk[at + 1:]
            offset += len(chunk)
            self.forwarded = offset
            if self.rate:
                await asyncio.sleep(len(chunk) / self.rate)
            yield chunk

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = self._body(request) if request.can_read_body else None
        try:
            async with self._session.request(request.method, self.target + request.path_qs, headers=headers,
                                             data=data) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body, content_type=resp.content_type)
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"proxy: {exc}")
