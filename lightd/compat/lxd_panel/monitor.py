"""`WS /ws/monitor`: one broadcaster gathers instances and host once per tick and offers the payload to
every socket. Each socket has a queue of `QUEUE_SIZE` (overflow policy: the oldest update is dropped —
only the latest matters) and its own sender, which closes the socket when one send takes longer than
`SEND_TIMEOUT`, so a slow client never holds back the others. The broadcaster runs only while sockets are
connected; a new socket gets the latest payload at once, or the broadcaster's first gather."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, web

from lightd.compat.base import CompatServices
from lightd.compat.lxd_panel.views import InstanceViews, now_iso
from lightd.cors import require_socket_origin
from lightd.errors import DockerUnavailable, ServiceUnavailable
from lightd.http import dumps
from lightd.tasks import TaskOwner

log = logging.getLogger(__name__)

QUEUE_SIZE = 2
SEND_TIMEOUT = 10.0
MAX_SOCKETS = 100
"""Sockets past this are refused with 503 before the upgrade."""
HEARTBEAT_SECONDS = 30.0
MAX_INBOUND_BYTES = 4096
"""The panel ignores what clients send; a larger frame closes the socket."""


def _offer(queue: asyncio.Queue[str], text: str) -> None:
    if queue.full():
        queue.get_nowait()  # drop the oldest: it is stale anyway
    queue.put_nowait(text)


class MonitorHub:
    """The monitor sockets of one front-end app and their shared broadcaster."""

    def __init__(
        self, services: CompatServices, views: InstanceViews, tasks: TaskOwner, interval: float,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.services = services
        self.views = views
        self.tasks = tasks
        self.interval = interval
        self.send_timeout = send_timeout
        self._sockets: dict[Any, asyncio.Queue[str]] = {}
        self._latest: tuple[float, str] | None = None
        self._broadcaster: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sockets)

    async def snapshot(self) -> dict[str, Any]:
        """One update: every instance and the host. With the engine away the list is empty, as the panel's."""
        instances, host = await asyncio.gather(self._instances(), self.views.host())
        return {"type": "update", "timestamp": now_iso(), "data": {"instances": instances, "host": host}}

    async def _instances(self) -> list[dict[str, Any]]:
        # The engine flag is the manager's poll: no extra engine call per tick.
        if not self.services.servers.engine_up:
            return []
        try:
            return [instance.monitor_entry() for instance in await self.views.instances()]
        except DockerUnavailable:
            return []

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Run one monitor socket until the client leaves or the app shuts down."""
        require_socket_origin(request)  # compat.<name>.cors_origins: 403 before the upgrade
        if len(self._sockets) >= MAX_SOCKETS:
            raise ServiceUnavailable(f"too many monitor connections (limit {MAX_SOCKETS})")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_INBOUND_BYTES)
        await ws.prepare(request)
        sender = self.attach(ws)
        try:
            async for _message in ws:
                pass  # incoming messages are ignored, as the panel does
        finally:
            self.detach(ws)
            sender.cancel()
        return ws

    def attach(self, ws: Any) -> asyncio.Task[None]:
        """Register a prepared socket (anything with `send_str`, `close`, `closed`); its sender task."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_SIZE)
        loop = asyncio.get_running_loop()
        if self._latest is not None and loop.time() - self._latest[0] <= self.interval:
            queue.put_nowait(self._latest[1])  # the first update at once, from the shared gather
        self._sockets[ws] = queue
        self._ensure_broadcaster()
        return self.tasks.spawn(self._send(ws, queue), name="lxd-monitor-sender")

    def detach(self, ws: Any) -> None:
        self._sockets.pop(ws, None)

    async def close(self) -> None:
        """Close every socket (app shutdown)."""
        sockets = list(self._sockets)
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets),
            return_exceptions=True,
        )

    def _ensure_broadcaster(self) -> None:
        if self._broadcaster is None:
            self._broadcaster = self.tasks.spawn(self._broadcast(), name="lxd-monitor-broadcaster")

    async def _broadcast(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Checked with no await before the task ends: a socket arriving after it sees None and spawns anew.
            while self._sockets:
                started = loop.time()
                try:
                    text = dumps(await self.snapshot())
                except Exception:  # noqa: BLE001 - one failed gather must not end the monitor
                    log.exception("lxd panel monitor: gathering an update failed")
                else:
                    self._latest = (loop.time(), text)
                    for queue in self._sockets.values():
                        _offer(queue, text)
                await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
        finally:
            self._broadcaster = None

    async def _send(self, ws: Any, queue: asyncio.Queue[str]) -> None:
        while not ws.closed:
            text = await queue.get()
            try:
                await asyncio.wait_for(ws.send_str(text), self.send_timeout)
            except TimeoutError:
                log.info("lxd panel monitor: dropping a client that took no update in %.1fs", self.send_timeout)
                self.detach(ws)
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                return
            except ConnectionError:
                return


MONITOR = web.AppKey("lxd_panel_monitor", MonitorHub)
