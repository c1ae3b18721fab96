"""`WS /api/ws/updates`: the seed's `{"type", "data"}` messages, taken from lightd's event bus.

- `container_event` `{container_id, event, state, timestamp}` for every lifecycle event of every lightd
  container (`event` uses Docker's words where one fits: start, stop, die, destroy, create);
- `job_status` `{job_id, status, progress}` from the job runner;
- `system_metric` `{cpu_usage, memory_usage, timestamp}` every `METRIC_SECONDS` (host figures, psutil).

Console output is not sent (kinds `console`/`install_log` are not subscribed). Each socket has its own
bus subscription of `QUEUE_SIZE` events (overflow: the bus drops the oldest) and is closed when one send
takes longer than `SEND_TIMEOUT`; at most `MAX_SOCKETS` sockets per application (then 503).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

import psutil
from aiohttp import WSCloseCode, web

from lightd.compat.base import CompatServices
from lightd.compat.container_codes.jobs import BUS_KIND, JobStatusChanged
from lightd.compat.container_codes.models import iso
from lightd.cors import require_socket_origin
from lightd.errors import ServiceUnavailable
from lightd.events import Event
from lightd.servers.events import ServerEvent
from lightd.http import dumps
from lightd.tasks import TaskOwner

QUEUE_SIZE = 256
SEND_TIMEOUT = 10.0
MAX_SOCKETS = 100
METRIC_SECONDS = 10.0
HEARTBEAT_SECONDS = 30.0
MAX_INBOUND_BYTES = 4096
DOCKER_WORDS = {"running": "start", "offline": "stop", "exit": "die", "deleted": "destroy", "installing": "create",
                "ready": "created", "stopping": "stopping", "starting": "starting", "crashed": "die", "paused": "pause"}


def translate(event: Event) -> dict[str, Any] | None:
    """One bus event as an updates message, or None for what this socket does not carry."""
    data = event.data
    if isinstance(data, ServerEvent) and event.server is not None:
        details = {k: v for k, v in data.wire.items() if k != "type"}
        message = {"container_id": event.server, "event": DOCKER_WORDS.get(data.type, data.type),
                   "state": data.type, "timestamp": iso(event.ts)}
        if details:
            message["details"] = details
        return {"type": "container_event", "data": message}
    if isinstance(data, JobStatusChanged):
        return {"type": "job_status", "data": asdict(data)}
    return None


def system_metric() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {"type": "system_metric", "data": {
        "cpu_usage": psutil.cpu_percent(None), "memory_usage": memory.total - memory.available,
        "timestamp": iso(time.time()),
    }}


class UpdateSockets:
    """The open update sockets of one application."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.tasks = TaskOwner("container-codes-updates")
        self._sockets: set[web.WebSocketResponse] = set()

    def __len__(self) -> int:
        return len(self._sockets)

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        require_socket_origin(request)  # compat.<name>.cors_origins: 403 before the upgrade
        if len(self._sockets) >= MAX_SOCKETS:
            raise ServiceUnavailable(f"too many update connections (limit {MAX_SOCKETS})")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_INBOUND_BYTES)
        # Subscribed before the upgrade completes: nothing that happens after the handshake is missed.
        subscription = self.services.events.subscribe(kinds={"event", BUS_KIND}, maxsize=QUEUE_SIZE)
        try:
            await ws.prepare(request)
            self._sockets.add(ws)
            sender = self.tasks.spawn(self._send(ws, subscription), name="updates-sender")
            try:
                async for _message in ws:
                    pass  # the seed defines no client messages
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        finally:
            subscription.close()
            self._sockets.discard(ws)
        return ws

    async def _send(self, ws: web.WebSocketResponse, subscription: Any) -> None:
        loop = asyncio.get_running_loop()
        next_metric = loop.time()
        while not ws.closed:
            if loop.time() >= next_metric:
                message: dict[str, Any] | None = system_metric()
                next_metric = loop.time() + METRIC_SECONDS
            else:
                try:
                    event = await asyncio.wait_for(subscription.get(), max(0.0, next_metric - loop.time()))
                except TimeoutError:
                    continue
                if event is None:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                    return
                message = translate(event)
            if message is None:
                continue
            try:
                await asyncio.wait_for(ws.send_str(dumps(message)), SEND_TIMEOUT)
            except TimeoutError:
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                return
            except ConnectionError:
                return

    async def close(self) -> None:
        """Close every socket (application shutdown)."""
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in list(self._sockets)),
            return_exceptions=True,
        )
        await self.tasks.close(timeout=5.0)


UPDATES = web.AppKey("container_codes_updates", UpdateSockets)
