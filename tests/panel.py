"""A fake panel for remote-sync tests: a real aiohttp server on 127.0.0.1 that records updates and can be
up, answering 503 ("down"), refusing chosen updates, or not listening at all."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

REMOTE_TOKEN = "lightd_remote_token_123456"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Panel:
    """Records every POST /update (attempts) and the accepted ones (updates), with their Authorization."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "up"
        self.refuse: Callable[[dict[str, Any]], int | None] = lambda payload: None
        self.attempts: list[tuple[float, dict[str, Any]]] = []
        self.updates: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.health_calls = 0
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def remote(self, **overrides: Any) -> dict[str, Any]:
        """A `remote` config section pointing here, with tiny retry delays."""
        return {"enabled": True, "url": self.url, "token": REMOTE_TOKEN, "retry_initial_seconds": 0.05,
                "retry_max_seconds": 0.2, "request_timeout_seconds": 2, **overrides}

    def statuses(self) -> list[str]:
        return [u.get("status") or f"error:{u.get('error')}" for u in self.updates]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/health", self._health)
        app.router.add_post("/api/update", self._update)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        await self._server.start_server()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def _health(self, request: web.Request) -> web.Response:
        self.health_calls += 1
        if self.mode != "up":
            return web.json_response({"status": 503}, status=503)
        return web.json_response({"status": 200, "endpoint": "active"})

    async def _update(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.attempts.append((time.monotonic(), payload))
        if self.mode != "up":
            return web.json_response({"error": "down"}, status=503)
        refused = self.refuse(payload)
        if refused is not None:
            return web.json_response({"error": "refused"}, status=refused)
        self.updates.append(payload)
        self.auth.append(request.headers.get("Authorization"))
        return web.json_response({"ok": True})
