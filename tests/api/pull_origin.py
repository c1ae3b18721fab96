"""A local HTTP server pulls download from in tests: files, streamed bodies, slow bodies, redirects, and a
record of every request it saw. Loopback only; every loop is bounded."""

from __future__ import annotations

import asyncio

from aiohttp import web

BODY = bytes(range(256)) * 1200  # 300 KiB
SLOW_SECONDS = 20.0


class Origin:
    """Serves on `host` (a loopback address) once started; `hits` lists the paths requested."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hits: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Origin:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/file.bin", self._file)
        app.router.add_get("/named", self._named)
        app.router.add_get("/stream/{size}", self._stream)
        app.router.add_get("/declared/{size}", self._declared)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/loop", self._loop)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.hits.append(request.path)
        return await handler(request)

    async def _file(self, request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/octet-stream")

    async def _named(self, request: web.Request) -> web.Response:
        # A hostile server's file name: a path, with a control character.
        return web.Response(body=b"named", headers={
            "Content-Disposition": "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fev%01il.txt"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """`size` bytes, chunked: no Content-Length."""
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = min(64 * 1024, size - sent)
            await response.write(b"s" * piece)
            sent += piece
        await response.write_eof()
        return response

    async def _declared(self, request: web.Request) -> web.StreamResponse:
        """Declares `size` bytes and sends only a little of it, then waits (the client must refuse at once)."""
        response = web.StreamResponse(headers={"Content-Length": request.match_info["size"]})
        await response.prepare(request)
        await response.write(b"d" * 1024)
        for _ in range(int(SLOW_SECONDS / 0.05)):  # until the client hangs up
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return response

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        """1 KiB every 50 ms, for at most SLOW_SECONDS."""
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(int(SLOW_SECONDS / 0.05)):
            await response.write(b"w" * 1024)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")
