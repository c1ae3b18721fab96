"""TimerWheel: one task runs every timer of the daemon — the stats round, start timeouts and any other
per-server deadline — where each used to be a task of its own sleeping (with 500 servers, 500 sleeping
tasks and their wake-ups). Timers sit in a heap ordered by deadline; the task sleeps until the earliest.

Bound: at most `max_timers` pending timers; overflow policy: a timer over it is refused — logged, counted in
`refused`, and returned already cancelled (the caller keeps working without it). A callback is a plain function that returns quickly; one that
returns an awaitable has it run as a task of the TaskOwner, and a repeating timer whose previous run has not
finished skips that turn (counted), so slow work never piles up."""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
from collections.abc import Callable
from typing import Any

from lightd.tasks import TaskOwner

log = logging.getLogger(__name__)

Callback = Callable[[], Any]


class Timer:
    """One pending timer (repeating when `interval` is set); `cancel()` removes it."""

    __slots__ = ("_wheel", "callback", "cancelled", "interval", "name", "running", "when")

    def __init__(self, wheel: TimerWheel, when: float, interval: float | None, callback: Callback, name: str) -> None:
        self._wheel = wheel
        self.when = when
        self.interval = interval
        self.callback = callback
        self.name = name
        self.cancelled = False
        self.running: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._wheel._pending -= 1


class TimerWheel:
    """Runs timers from one owned task (see the module docstring)."""

    def __init__(self, tasks: TaskOwner, max_timers: int = 65536) -> None:
        self.tasks = tasks
        self.max_timers = max_timers
        self.skipped = 0
        self.refused = 0
        """Turns of repeating timers skipped because their previous run was still going."""
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._pending = 0
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Timers pending."""
        return self._pending

    def start(self) -> None:
        """Start the wheel's task (owned by the TaskOwner, which cancels it at close)."""
        if self._task is None:
            self._task = self.tasks.spawn(self._run(), name="timer-wheel")

    def call_later(self, delay: float, callback: Callback, *, name: str) -> Timer:
        """Run `callback` once, `delay` seconds from now."""
        return self._add(max(delay, 0.0), None, callback, name)

    def every(self, interval: float, callback: Callback, *, name: str, first: float | None = None) -> Timer:
        """Run `callback` every `interval` seconds (the first time after `first`, default `interval`)."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        return self._add(interval if first is None else max(first, 0.0), interval, callback, name)

    def _add(self, delay: float, interval: float | None, callback: Callback, name: str) -> Timer:
        loop = asyncio.get_running_loop()
        timer = Timer(self, loop.time() + delay, interval, callback, name)
        if self._pending >= self.max_timers:
            self.refused += 1
            log.warning("timer %s refused: %d timers pending already", name, self._pending)
            timer.cancelled = True
            return timer
        self.start()  # at the first timer: a wheel nobody uses costs no task
        self._pending += 1
        self._push(timer)
        return timer

    def _push(self, timer: Timer) -> None:
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        # Cancelled timers are dropped lazily; compact when they outnumber the live ones.
        if len(self._heap) > 64 and len(self._heap) > 2 * self._pending:
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
        if (earliest is None or timer.when < earliest) and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                _, _, timer = heapq.heappop(self._heap)
                if not timer.cancelled:
                    self._fire(timer, now)
            self._wake = loop.create_future()
            delay = self._heap[0][0] - loop.time() if self._heap else None
            try:
                async with asyncio.timeout(delay):
                    await self._wake
            except TimeoutError:
                pass

    def _fire(self, timer: Timer, now: float) -> None:
        if timer.interval is not None:
            # Next turn on the original cadence; one that fell behind (a busy loop) starts again from now.
            timer.when = max(timer.when + timer.interval, now)
            heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
            if timer.running is not None and not timer.running.done():
                self.skipped += 1
                return
        else:
            timer.cancel()
        try:
            result = timer.callback()
            if inspect.isawaitable(result):
                timer.running = self.tasks.spawn(_await(result), name=f"timer:{timer.name}")
        except Exception:  # noqa: BLE001 - one timer's failure (or a closed owner's refusal) must not stop the others
            log.exception("timer %s failed", timer.name)


async def _await(awaitable: Any) -> None:
    await awaitable
