"""What the two nodes say to each other.

1. `POST /transfers` (target token, JSON `Offer`): the target checks it can take the server — the id and
   volume are free, its pool holds the ports and they are free, the disk has room, the image is there (it
   pulls it) — and answers 201, or 409 naming what it lacks (`details.ports`). Nothing is created.
2. `PUT /transfers/{transfer_id}` (target token): the volume as one framed stream. Each frame is a kind
   byte and a 4-byte big-endian length, then the payload: `D` frames carry the tar + zstd bytes; one `E`
   frame (JSON `{"sha256", "bytes"}` of those bytes) ends it. A stream that ends without its `E` frame was
   cut; a checksum that differs refuses the transfer. The target answers when the server exists there.
3. `DELETE /transfers/{transfer_id}` (target token or the target's node token): cancel.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, TypeVar

import orjson
from aiohttp import StreamReader
from pydantic import BaseModel, ConfigDict, Field

from lightd.errors import ArchiveRejected, BadRequest, Conflict, NotFound

DATA, END = b"D", b"E"
HEADER_BYTES = 5
MAX_DATA_FRAME = 8 * 1024 * 1024
MAX_END_FRAME = 4096
TRANSFER_ID = re.compile(r"^[0-9a-f]{32}$")


class TransferCut(BadRequest):
    """The stream ended (or stalled) before its end frame: the connection was cut."""


class Offer(BaseModel):
    """The server's record, sent before its volume: what the target checks and will create."""

    model_config = ConfigDict(extra="forbid")
    transfer_id: str = Field(pattern=TRANSFER_ID.pattern)
    """Chosen by the source: the same id on both nodes (either side cancels with it)."""
    spec: dict[str, Any]
    """The server's spec as stored on the source (validated as a create is, on the target)."""
    install_log: str | None = Field(default=None, max_length=256 * 1024 * 1024)
    volume_bytes: int = Field(ge=0)
    """Bytes of the volume's regular files (what the target must have room for)."""
    compression: Literal["zstd"] = "zstd"


class _Phased(Protocol):
    phase: str


T = TypeVar("T", bound=_Phased)


def cancellable(transfer: T | None, missing: str, too_late: str) -> T:
    """The transfer a cancel names, at either end: NotFound (`missing`) when none is under way, Conflict
    (`too_late`) once the target is creating the server (past that point the server exists there)."""
    if transfer is None:
        raise NotFound(missing)
    if transfer.phase == "committing":
        raise Conflict(too_late)
    return transfer


def data_header(length: int) -> bytes:
    return DATA + length.to_bytes(4, "big")


def end_frame(sha256: str, size: int) -> bytes:
    payload = orjson.dumps({"sha256": sha256, "bytes": size})
    return END + len(payload).to_bytes(4, "big") + payload


class FrameReader:
    """The target's side: the `D` payloads of a request body, until its `E` frame (then `end` holds it).
    `received` counts payload bytes, held to `max_bytes`; a read that waits `idle_timeout` is a cut."""

    def __init__(self, content: StreamReader, max_bytes: int, idle_timeout: float) -> None:
        self.content = content
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.received = 0
        self.end: dict[str, Any] | None = None

    async def _read(self, count: int) -> bytes:
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await self.content.readexactly(count)
        except asyncio.IncompleteReadError:
            raise TransferCut("the stream ended before its end frame (the connection was cut)") from None
        except TimeoutError:
            raise TransferCut(f"the stream stalled for {self.idle_timeout:g}s") from None
        except (ConnectionError, OSError) as exc:  # aiohttp's payload errors are OSErrors too
            raise TransferCut(f"the stream was cut: {exc}") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.end is None:
            head = await self._read(HEADER_BYTES)
            kind, length = head[:1], int.from_bytes(head[1:], "big")
            if kind == DATA and length <= MAX_DATA_FRAME:
                self.received += length
                if self.received > self.max_bytes:
                    raise ArchiveRejected(f"the transfer is larger than {self.max_bytes} bytes (transfers.max_bytes)")
                yield await self._read(length)
            elif kind == END and length <= MAX_END_FRAME:
                self.end = _end_payload(await self._read(length))
            else:
                raise ArchiveRejected(f"not a transfer stream (frame {kind!r} of {length} bytes)")


def _end_payload(raw: bytes) -> dict[str, Any]:
    try:
        end = orjson.loads(raw)
    except orjson.JSONDecodeError:
        end = None
    if not (isinstance(end, dict) and isinstance(end.get("sha256"), str) and isinstance(end.get("bytes"), int)):
        raise ArchiveRejected("not a transfer stream (malformed end frame)")
    return end
