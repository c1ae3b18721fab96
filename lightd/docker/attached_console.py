"""AttachedConsole: the ConsoleStream of a server container, over an aiodocker attach stream; always closed,
also when aiodocker's own close gives up."""

from __future__ import annotations

import logging
from typing import Any

from lightd.docker.client import stream_response, translate

log = logging.getLogger(__name__)


class AttachedConsole:
    """ConsoleStream over an aiodocker attach stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def connect(self) -> None:
        """Make the attach connection (aiodocker otherwise makes it at the first read)."""
        await self._stream.__aenter__()  # entering a stream's context connects it; close() is its exit

    async def read(self) -> bytes | None:
        try:
            message = await self._stream.read_out()
        except Exception as exc:  # noqa: BLE001 - the engine went away mid-stream
            log.debug("console stream ended with %r", exc)
            return None
        return None if message is None else message.data

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write_in(data)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "write to console") from exc

    async def close(self) -> None:
        try:
            await self._stream.close()
        except Exception:  # noqa: BLE001 - closing a dead stream
            pass
        # aiodocker's close gives up on a stream whose connection is gone or never upgraded; the response
        # must still be closed, or its connection is only found (and reported unclosed) by the collector.
        response = stream_response(self._stream)
        if response is not None and not response.closed:
            response.close()
