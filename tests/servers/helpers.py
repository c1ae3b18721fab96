"""Helpers for lifecycle tests: make a volume and a server, wait for states and events."""

from __future__ import annotations

import asyncio
from typing import Any

from lightd import keys
from lightd.events import LINE_KINDS
from lightd.servers.events import ServerEvent
from tests.conftest import TEST_IMAGE, Api, wait_for


async def make_volume(api: Api) -> str:
    status, body = await api.post("/volumes")
    assert status == 201, body
    return body["volume_id"]


async def create_server(api: Api, internal_id: str, *, ready: bool = True, **fields: Any) -> dict[str, Any]:
    if "volume_id" not in fields:
        fields["volume_id"] = await make_volume(api)
    body = {"internal_id": internal_id, "image": TEST_IMAGE, "startup_command": "sleep 1000", **fields}
    status, answer = await api.post("/containers", json=body)
    assert status == 202, answer
    if ready:
        await wait_install(api, internal_id, "ready")
    return answer


async def get(api: Api, internal_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/containers/{internal_id}")
    assert status == 200, body
    return body


async def wait_install(api: Api, internal_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await get(api, internal_id)
        if body["install_state"] != "installing" and body["install_state"] != state:
            raise AssertionError(f"install ended {body['install_state']}: {body.get('install_error')}")
        return body if body["install_state"] == state else None

    return await wait_for(check, timeout=timeout)


async def wait_state(api: Api, internal_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await get(api, internal_id)
        return body if body["state"] == state else None

    return await wait_for(check, timeout=timeout)


class EventLog:
    """Everything the app's event bus publishes for one server, recorded from the moment it is made."""

    def __init__(self, app: Any, server: str | None = None) -> None:
        self.sub = app[keys.EVENTS].subscribe(server=server, maxsize=100_000)
        self.events: list[Any] = []

    def drain(self) -> list[Any]:
        while (event := self.sub.get_nowait()) is not None:
            self.events.append(event)
        return self.events

    def of(self, kind: str) -> list[Any]:
        """The data of every event of `kind`; output chunks are flattened to their lines, server events are
        in their wire shape (`{"type": ..., <fields>}`)."""
        if kind in LINE_KINDS:
            return [line for e in self.drain() if e.kind == kind for line in e.data]
        return [e.data.wire if isinstance(e.data, ServerEvent) else e.data for e in self.drain() if e.kind == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.of("event")]

    async def wait(self, kind: str, predicate: Any = lambda data: True, timeout: float = 30) -> Any:
        def found() -> Any:
            for data in self.of(kind):
                if predicate(data):
                    return data or True
            return None

        return await wait_for(found, timeout=timeout, interval=0.05)

    async def wait_type(self, event_type: str, timeout: float = 30) -> Any:
        return await self.wait("event", lambda d: d["type"] == event_type, timeout)

    def close(self) -> None:
        self.sub.close()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
