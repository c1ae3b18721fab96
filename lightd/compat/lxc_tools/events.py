"""The LXC Tools Socket.IO server and its `container_update` events, all taken from the event bus.

Routes publish their `<operation>_start|success|error` steps on the bus (kind `compat`, data an
`OperationStep`); native lifecycle events of containers made over the native
API are translated too (`installing` -> `container_create_start`, `ready` -> `container_create_success`,
`failed` -> `container_create_error`, `deleted` -> `container_delete_success`). While a front-end
operation on a container is in flight, that container's native events are not translated: the
operation's own steps describe it, so a client never sees one create twice. One bus subscriber per
daemon feeds the Socket.IO clients of both applications (mounted and own port).

Rooms are decorative, as in the real server: `container_update` goes to every connected client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lightd.compat.base import CompatServices
from lightd.cors import engineio_origin_check
from lightd.events import Event
from lightd.servers.events import InstallFailed, InstallStateChanged, ServerDeleted

if TYPE_CHECKING:
    import socketio

log = logging.getLogger(__name__)

BUS_KIND = "compat"
SUBSCRIPTION_SIZE = 1024  # overflow: the bus drops the oldest update
MAX_INBOUND_BYTES = 64 * 1024
ROOM_MAX = 128


def naive_utc(ts: float) -> str:
    """The real server's timestamp: UTC ISO 8601 without an offset."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()


@dataclass(frozen=True, slots=True)
class OperationStep:
    """One step of a front-end operation: `type` is `<operation>_start|success|error`, `data` its payload."""

    type: str
    data: dict[str, Any]


def publish_update(services: CompatServices, update_type: str, name: str | None, data: dict[str, Any]) -> None:
    """Put one `container_update` on the bus (every instance's Socket.IO clients receive it)."""
    services.events.publish(BUS_KIND, name, OperationStep(update_type, data))


def create_socketio() -> socketio.AsyncServer:
    """The Socket.IO server with the real project's client events (connect, join_room, leave_room)."""
    import socketio  # here, not at the top: python-socketio (and requests, which it imports) is 60 ms of start-up

    # Origins: compat.lxc_tools.cors_origins, checked by lightd.cors as for every socket (a refused page's
    # request gets engine.io's 400); lightd.cors also writes the CORS headers, engine.io's credentials flag off.
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=engineio_origin_check, cors_credentials=False,
                               max_http_buffer_size=MAX_INBOUND_BYTES)

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
        if isinstance(event.data, OperationStep):
            return self._own(event.server, event.data, event.ts)
        if event.kind == "event" and event.server is not None:
            return self._native(event)
        return None

    def _own(self, name: str | None, step: OperationStep, ts: float) -> dict[str, Any]:
        if name is not None:
            if step.type.endswith("_start"):
                self._busy[name] = self._busy.get(name, 0) + 1
            elif step.type.endswith(("_success", "_error")) and name in self._busy:
                self._busy[name] -= 1
                if self._busy[name] <= 0:
                    del self._busy[name]
        return {"type": step.type, "data": step.data, "timestamp": naive_utc(ts)}

    def _native(self, event: Event) -> dict[str, Any] | None:
        name = event.server
        if name in self._busy:
            return None
        data: dict[str, Any] = {"name": name}
        match event.data:
            case InstallStateChanged(state="installing" | "ready" as state):
                update_type = "container_create_start" if state == "installing" else "container_create_success"
                server = self.services.servers.find(name)
                if server is not None:
                    data["image"] = server.spec.image
            case InstallFailed(error=error):
                update_type = "container_create_error"
                data["error"] = error or "install failed"
            case ServerDeleted():
                update_type = "container_delete_success"
            case _:
                return None
        return {"type": update_type, "data": data, "timestamp": naive_utc(event.ts)}


async def emit_updates(current: Callable[[], socketio.AsyncServer | None], services: CompatServices,
                       subscription: Any) -> None:
    """Forward every translated bus event to the Socket.IO clients until the subscription closes (`current()`
    is None until the first Socket.IO request makes the server: no client to send to)."""
    translator = UpdateTranslator(services)
    async for event in subscription:
        try:
            update = translator.translate(event)
            sio = current()
            if update is not None and sio is not None:
                await sio.emit("container_update", update)
        except Exception:  # noqa: BLE001 - one bad event or emit must not end the feed
            log.exception("lxc_tools: could not forward a %s event of %s", event.kind, event.server)
