"""TaskOwner: every background task lightd starts is owned here — referenced, failures logged, and
cancelled and awaited (with a timeout) at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskOwner:
    """Owns a set of tasks. `spawn` instead of a bare `asyncio.create_task`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name}: closed, cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    async def run_shielded(self, work: Awaitable[T], *, name: str) -> T:
        """Run `work` in an owned task and wait for it: a caller that is cancelled (a client that
        disconnects) does not cut the work in half. Its error is raised to the caller, not logged here."""

        async def run() -> tuple[T | None, BaseException | None]:
            try:
                return await work, None
            except Exception as exc:  # noqa: BLE001 - raised in the caller below
                return None, exc

        result, error = await asyncio.shield(self.spawn(run(), name=name))
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait for them, at most `timeout` seconds."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                log.warning("task %s did not stop within %.1fs", task.get_name(), timeout)
