"""In-process event bus. Every subscriber has a bounded queue; when a slow subscriber's queue is full the
oldest event is dropped (and counted) so a publisher is never blocked by one consumer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to one server (or to the daemon when `server` is None).

    kind: "event" (state changes, lifecycle steps), "console" (one output line), "stats",
    "daemon_message", "install_log" (one install output line).
    """

    kind: str
    server: str | None
    data: Any
    ts: float = field(default_factory=time.time)
    encoded: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Serialized forms, made once and shared by every consumer (e.g. the console WebSocket frame)."""


class Subscription:
    """A bounded queue of events for one consumer. Overflow policy: drop the oldest, count it."""

    def __init__(self, bus: EventBus, server: str | None, kinds: frozenset[str] | None, maxsize: int) -> None:
        self._bus = bus
        self.server = server
        self.kinds = kinds
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self.closed = False

    def wants(self, event: Event) -> bool:
        if self.server is not None and event.server != self.server:
            return False
        return self.kinds is None or event.kind in self.kinds

    def offer(self, event: Event | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except asyncio.QueueEmpty:  # pragma: no cover - raced with a reader
                    pass

    async def get(self) -> Event | None:
        """The next event, or None once the subscription is closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self.offer(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventBus:
    """Fan-out of events to subscribers; publishing never blocks or awaits."""

    def __init__(self, default_queue_size: int = 1024) -> None:
        self.default_queue_size = default_queue_size
        self._subscribers: set[Subscription] = set()

    def subscribe(
        self, server: str | None = None, kinds: set[str] | frozenset[str] | None = None, maxsize: int | None = None
    ) -> Subscription:
        sub = Subscription(self, server, frozenset(kinds) if kinds else None, maxsize or self.default_queue_size)
        self._subscribers.add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, kind: str, server: str | None, data: Any) -> Event:
        event = Event(kind, server, data)
        for sub in list(self._subscribers):
            if sub.wants(event):
                sub.offer(event)
        return event

    def close(self) -> None:
        for sub in list(self._subscribers):
            sub.close()
