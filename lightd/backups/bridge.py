"""Byte streams between the archive's worker thread and the event loop, bounded both ways: the thread
waits for the loop (never the other way round), and stops waiting when the backup is cancelled or the
other side failed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from lightd.backups.archive import Interrupted
from lightd.errors import LightdError

POLL_SECONDS = 0.2


def wait_on_loop(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[Any]], stop: threading.Event,
                 peer: Callable[[], BaseException | None]) -> Any:
    """Run a coroutine on `loop` from a worker thread and wait for it; Interrupted on `stop`, the peer's
    error if the other side failed meanwhile."""
    future = asyncio.run_coroutine_threadsafe(make(), loop)  # type: ignore[arg-type]
    while True:
        try:
            return future.result(POLL_SECONDS)
        except concurrent.futures.TimeoutError:
            failed = peer()
            if stop.is_set() or failed is not None:
                future.cancel()
                # It may have ended meanwhile with an error nobody waits for now: retrieved, not logged.
                future.add_done_callback(lambda done: done.cancelled() or done.exception())
                if failed is not None and not stop.is_set():
                    raise failed if isinstance(failed, LightdError) else LightdError(str(failed)) from failed
                raise Interrupted("cancelled") from None


class PartWriter:
    """A thread's writes gathered into parts of `part_size` bytes, handed to an async consumer one at a
    time (at most one part waiting: memory is two parts and the one being filled)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, part_size: int, stop: threading.Event) -> None:
        self.loop = loop
        self.part_size = part_size
        self.stop = stop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self.error: BaseException | None = None
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            self._put(part)
        return len(data)

    def close(self) -> None:
        """The last (short) part, then the end."""
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._put(None)

    def _put(self, part: bytes | None) -> None:
        wait_on_loop(self.loop, lambda: self.queue.put(part), self.stop, lambda: self.error)

    async def parts(self) -> AsyncIterator[bytes]:
        """The consumer's side: every part, until the writer closes."""
        while (part := await self.queue.get()) is not None:
            yield part


class ChunkReader:
    """A file-like `read(n)` in a worker thread over an async iterator of chunks on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chunks: AsyncIterator[bytes], stop: threading.Event) -> None:
        self.loop = loop
        self.chunks = chunks
        self.stop = stop
        self._pending = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, count: int = -1) -> bytes:
        while not self._ended and (count < 0 or len(self._pending) < count):
            chunk = wait_on_loop(self.loop, self._next, self.stop, lambda: None)
            if chunk is None:
                self._ended = True
            else:
                self._pending += chunk
        if count < 0:
            count = len(self._pending)
        data, self._pending = self._pending[:count], self._pending[count:]
        return data

    async def _next(self) -> bytes | None:
        try:
            return await anext(self.chunks)
        except StopAsyncIteration:
            return None
