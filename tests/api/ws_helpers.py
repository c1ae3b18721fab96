"""Helpers for console WebSocket tests: a small reader over a real aiohttp client socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from tests.conftest import Api


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"socket closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class Console:
    """One console socket: read frames, wait for some, send inbound messages."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = 15) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        if message.type == WSMsgType.TEXT:
            frame = json.loads(message.data)
            self.seen.append(frame)
            return frame
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise Closed(self.ws.close_code if message.data is None else message.data, message.extra or "")
        raise AssertionError(f"unexpected message {message!r}")

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        """Read frames until one matches (all read frames stay in `seen`)."""
        async def read() -> dict[str, Any]:
            while True:
                frame = await self.next(timeout)
                if predicate(frame):
                    return frame

        return await asyncio.wait_for(read(), timeout)

    async def event(self, event_type: str, timeout: float = 30) -> dict[str, Any]:
        return (await self.until(lambda f: f["event"] == "event" and f["data"]["type"] == event_type, timeout))["data"]

    async def console_line(self, line: str, timeout: float = 30) -> None:
        await self.until(lambda f: f["event"] == "console" and f["data"] == line, timeout)

    async def closed(self, timeout: float = 15) -> Closed:
        """Read until the server closes the socket; the close."""
        try:
            await self.until(lambda f: False, timeout)
        except Closed as closed:
            return closed
        raise AssertionError("socket did not close")

    def lines(self) -> list[str]:
        return [f["data"] for f in self.seen if f["event"] == "console"]

    def of(self, event: str) -> list[Any]:
        return [f["data"] for f in self.seen if f["event"] == event]

    async def send(self, event: str, data: Any = None) -> None:
        await self.ws.send_json({"event": event, "data": data} if data is not None else {"event": event})

    async def close(self) -> None:
        await self.ws.close()


async def connect(client: TestClient, container_id: str, token: str, *, greet: bool = True) -> Console:
    """Open the console socket; with `greet`, read the greeting (stats, then logs)."""
    ws = await client.ws_connect(f"/ws/{container_id}?token={token}")
    console = Console(ws)
    if greet:
        first, second = await console.next(), await console.next()
        assert (first["event"], second["event"]) == ("stats", "logs"), (first, second)
    return console


async def mint(api: Api, container: str | None, purpose: str = "websocket", ttl: int | None = None) -> str:
    body: dict[str, Any] = {"container": container, "purpose": purpose}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    status, answer = await api.post("/auth/tokens", json=body)
    assert status == 201, answer
    return answer["token"]
