"""In-process event bus. Every subscriber has a bounded queue; when a slow subscriber's queue is full the
oldest events are dropped (and counted) so a publisher is never blocked by one consumer.

Console output travels as one event per chunk read from the container (`data` is the chunk's lines), so the
cost of the bus is per chunk, not per line; queue bounds and drop counts are still in lines."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

LINE_KINDS = frozenset({"console", "install_log"})
"""Kinds whose `data` is a list of output lines (one chunk); they weigh one per line in a queue."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to one server (or to the daemon when `server` is None).

    kind: "event" (a `lightd.servers.events.ServerEvent`: state changes, lifecycle steps), "console" (the
    lines of one output chunk, a list), "stats", "daemon_message", "install_log" (the lines of one install
    output chunk, a list), "compat" (a front end's own dataclass, e.g. an LXC Tools `OperationStep`).
    """

    kind: str
    server: str | None
    data: Any
    ts: float = field(default_factory=time.time)
    encoded: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Serialized forms, made once and shared by every consumer (e.g. the console WebSocket frames)."""

    @property
    def weight(self) -> int:
        """Queue units: one per line for output chunks, one for anything else."""
        return len(self.data) if self.kind in LINE_KINDS else 1


class Subscription:
    """A bounded queue of events for one consumer, `maxsize` in lines for output chunks (one per other
    event). Overflow policy: drop the oldest (cutting the oldest chunk when only part must go), count the
    lines and events dropped."""

    def __init__(self, bus: EventBus, server: str | None, kinds: frozenset[str] | None, maxsize: int) -> None:
        self._bus = bus
        self.server = server
        self.kinds = kinds
        self.maxsize = maxsize
        self._queue: deque[Event | None] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.closed = False
        self.deliver_now: Callable[[Event], bool] | None = None
        """Optional: called for an event when nothing is queued and the consumer is waiting for one; True
        when the consumer took it there and then (it is then not queued)."""

    def wants(self, event: Event) -> bool:
        if self.server is not None and event.server != self.server:
            return False
        return self.kinds is None or event.kind in self.kinds

    def offer(self, event: Event | None) -> None:
        if (event is not None and self.deliver_now is not None and not self._queue and self._waiter is not None
                and self.deliver_now(event)):
            return
        if event is not None:
            self._size += event.weight
            self._queue.append(event)
            if self._size > self.maxsize:
                self._shed()
        else:
            self._queue.append(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _shed(self) -> None:
        """Drop from the oldest end until the queue fits (the newest event always stays)."""
        queue = self._queue
        while self._size > self.maxsize and len(queue) > 1:
            oldest = queue[0]
            if oldest is None:  # the close marker stays
                break
            excess = self._size - self.maxsize
            weight = oldest.weight
            if oldest.kind in LINE_KINDS and weight > excess:
                queue[0] = replace(oldest, data=oldest.data[excess:], encoded={})
                self._size -= excess
                self.dropped += excess
                self._bus.dropped_total += excess
                return
            queue.popleft()
            self._size -= weight
            self.dropped += weight
            self._bus.dropped_total += weight

    def get_nowait(self) -> Event | None:
        """The next queued event, or None when nothing is queued (or at the close marker)."""
        if not self._queue:
            return None
        event = self._queue.popleft()
        if event is None:
            self._queue.appendleft(None)  # stays: later reads see the end too
            return None
        self._size -= event.weight
        return event

    async def get(self) -> Event | None:
        """The next event, or None once the subscription is closed and drained."""
        while not self._queue:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.get_nowait()

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
        self.dropped_total = 0
        """Lines and events dropped by every subscription's overflow, over the bus's life (GET /metrics)."""

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
