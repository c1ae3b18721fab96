"""EngineMonitor: the engine's event stream (`GET /events`) about lightd's server containers, turned into the
domain's frozen dataclasses. It reconnects by itself with a bounded backoff and says when the stream is
up or down; it reads the stream itself, one record at a time (aiodocker's own fan-out queues are unbounded)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from lightd.docker.client import DockerClient, EventStream
from lightd.errors import LightdError
from lightd.servers.environment import (
    ContainerDestroyed,
    ContainerDied,
    ContainerEvent,
    ContainerOomKilled,
    ContainerPaused,
    ContainerStarted,
    ContainerUnpaused,
    EngineEvent,
    EventStreamDown,
    EventStreamUp,
)

log = logging.getLogger(__name__)

ACTIONS = ("start", "die", "oom", "destroy", "pause", "unpause")
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


def container_event(record: dict[str, Any], id_label: str) -> ContainerEvent | None:
    """The dataclass of one engine record; None for anything else (another type, action or container)."""
    actor = record.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    internal_id = attributes.get(id_label)
    if record.get("Type") != "container" or not internal_id:
        return None
    nanos = record.get("timeNano")
    when = nanos / 1e9 if isinstance(nanos, int) else float(record.get("time") or 0)
    match record.get("Action"):
        case "start":
            return ContainerStarted(internal_id, when)
        case "die":
            code = attributes.get("exitCode")
            return ContainerDied(internal_id, int(code) if str(code).lstrip("-").isdigit() else None, when)
        case "oom":
            return ContainerOomKilled(internal_id, when)
        case "destroy":
            return ContainerDestroyed(internal_id, when)
        case "pause":
            return ContainerPaused(internal_id, when)
        case "unpause":
            return ContainerUnpaused(internal_id, when)
    return None


class EngineMonitor:
    """Follows the events of the containers carrying all of `labels`; `id_label` names the server."""

    def __init__(self, client: DockerClient, labels: dict[str, str], id_label: str) -> None:
        self.client = client
        self.filters = {"type": ["container"], "event": list(ACTIONS),
                        "label": [f"{key}={value}" for key, value in labels.items()]}
        self.id_label = id_label
        self._stream: EventStream | None = None

    @property
    def stream(self) -> EventStream | None:
        """The connected stream (None while down); closing it makes the monitor reconnect."""
        return self._stream

    async def events(self) -> AsyncIterator[EngineEvent]:
        """EventStreamUp at each connection, the container events it carries, EventStreamDown when it is
        lost; then a reconnect after a delay doubling from RETRY_FIRST_SECONDS up to RETRY_MAX_SECONDS."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                stream = await self.client.open_events(self.filters)
            except LightdError as exc:
                log.debug("engine event stream: cannot connect: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self._stream = stream
            reason = "the engine ended the event stream"
            try:
                log.info("engine event stream connected")
                yield EventStreamUp()
                delay = RETRY_FIRST_SECONDS
                async for record in stream:
                    event = container_event(record, self.id_label)
                    if event is not None:
                        yield event
            except LightdError as exc:
                reason = str(exc)
            finally:
                self._stream = None
                stream.close()
            log.warning("engine event stream lost (%s); reconnecting", reason)
            yield EventStreamDown(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
