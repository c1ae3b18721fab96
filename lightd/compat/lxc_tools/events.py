"""The LXC Tools Socket.IO server and its `container_update` events, all taken from the event bus.

Routes publish their `<operation>_start|success|error` steps on the bus (kind `compat`, data
`{"front_end": "lxc_tools", "type", "data"}`); native lifecycle events of containers made over the native
API are translated too (`installing` -> `container_create_start`, `ready` -> `container_create_success`,
`failed` -> `container_create_error`, `deleted` -> `container_delete_success`). While a front-end
operation on a container is in flight, that container's native events are not translated: the
operation's own steps describe it, so a client never sees one create twice. Every application instance
(mounted and own port) runs one bus subscriber feeding its own Socket.IO clients.

Rooms are decorative, as in the real server: `container_update` goes to every connected client.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import socketio

from lightd.compat.base import CompatServices
from lightd.events import Event

log = logging.getLogger(__name__)

FRONT_END = "lxc_tools"
BUS_KIND = "compat"
SUBSCRIPTION_SIZE = 1024  # overflow: the bus drops the oldest update
MAX_INBOUND_BYTES = 64 * 1024
ROOM_MAX = 128
NATIVE_CREATE = {"installing": "container_create_start", "ready": "container_create_success",
                 "failed": "container_create_error", "deleted": "container_delete_success"}


def naive_utc(ts: float) -> str:
    """The real server's timestamp: UTC ISO 8601 without an offset."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()


def publish_update(services: CompatServices, update_type: str, name: str | None, data: dict[str, Any]) -> None:
    """Put one `container_update` on the bus (every instance's Socket.IO clients receive it)."""
    services.events.publish(BUS_KIND, name, {"front_end": FRONT_END, "type": update_type, "data": data})


def create_socketio() -> socketio.AsyncServer:
    """The Socket.IO server with the real project's client events (connect, join_room, leave_room)."""
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", max_http_buffer_size=MAX_INBOUND_BYTES)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.emit("connected", {"message": "Connected to LXC API Server"}, to=sid)

    async def join_room(sid: str, data: Any = None) -> None:
        room = _room(data)
        await sio.enter_room(sid, room)
        await sio.emit("joined_room", {"room": room}, to=sid)

    async def leave_room(sid: str, data: Any = None) -> None:
        room = _room(data)
        await sio.leave_room(sid, room)
        await sio.emit("left_room", {"room": room}, to=sid)

    sio.on("connect", connect)
    sio.on("join_room", join_room)
    sio.on("leave_room", leave_room)
    return sio


def _room(data: Any) -> str:
    room = data.get("room") if isinstance(data, dict) else None
    if not isinstance(room, str) or not 0 < len(room) <= ROOM_MAX:
        return "default"
    return room


class UpdateTranslator:
    """Bus events -> `container_update` payloads (or None), keeping the in-flight operations seen."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self._busy: dict[str, int] = {}

    def translate(self, event: Event) -> dict[str, Any] | None:
        if event.kind == BUS_KIND:
            return self._own(event)
        if event.kind == "event" and event.server is not None:
            return self._native(event)
        return None

    def _own(self, event: Event) -> dict[str, Any] | None:
        data = event.data
        if not isinstance(data, dict) or data.get("front_end") != FRONT_END:
            return None
        update_type = data["type"]
        if event.server is not None:
            if update_type.endswith("_start"):
                self._busy[event.server] = self._busy.get(event.server, 0) + 1
            elif update_type.endswith(("_success", "_error")) and event.server in self._busy:
                self._busy[event.server] -= 1
                if self._busy[event.server] <= 0:
                    del self._busy[event.server]
        return {"type": update_type, "data": data["data"], "timestamp": naive_utc(event.ts)}

    def _native(self, event: Event) -> dict[str, Any] | None:
        name = event.server
        native_type = event.data.get("type") if isinstance(event.data, dict) else None
        update_type = NATIVE_CREATE.get(native_type or "")
        if update_type is None or name in self._busy:
            return None
        data: dict[str, Any] = {"name": name}
        if update_type == "container_create_error":
            data["error"] = event.data.get("error") or "install failed"
        elif update_type != "container_delete_success":
            server = self.services.servers.servers.get(name)
            if server is not None:
                data["image"] = server.spec.image
        return {"type": update_type, "data": data, "timestamp": naive_utc(event.ts)}


async def emit_updates(sio: socketio.AsyncServer, services: CompatServices, subscription: Any) -> None:
    """Forward every translated bus event to the Socket.IO clients until the subscription closes."""
    translator = UpdateTranslator(services)
    async for event in subscription:
        try:
            update = translator.translate(event)
            if update is not None:
                await sio.emit("container_update", update)
        except Exception:  # noqa: BLE001 - one bad event or emit must not end the feed
            log.exception("lxc_tools: could not forward a %s event of %s", event.kind, event.server)
