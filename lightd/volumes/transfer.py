"""Files in and out of a volume as streams: a file's content with HTTP-style validators and one byte range
(`open_content`), and uploaded files written as they arrive (`store_files`, `receive`).

No HTTP here: callers pass the header values they got (`Conditions`) and get back what to send (`Content`:
status, headers, an open descriptor or chunks). The native routes, the signed-URL routes and the compat
front ends all serve files through these, and write them to HTTP with `lightd/http_files.py`.

A tenant can change a file while it is served. The descriptor is opened through the sandbox (no link
followed, FIFOs and devices refused), the length is fixed at open time, and a file that shrinks meanwhile
ends the stream short (`Content.complete` is then False: the caller drops the connection rather than
send a short body as if whole).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from lightd.errors import PayloadTooLarge, RangeNotSatisfiable, ValidationFailed
from lightd.volumes.incoming import IncomingFile, entry_name
from lightd.volumes.sandbox import Sandbox, display, open_regular, split_path

if TYPE_CHECKING:
    from lightd.volumes.service import VolumeService

READ_CHUNK = 1024 * 1024
"""Bytes read per worker-thread hop when a file is streamed (not sent with sendfile)."""
WRITE_BATCH = 1024 * 1024
"""Uploaded bytes gathered before one worker-thread write (a network read gives a few KiB at a time)."""
MAX_NUMBER_DIGITS = 19
"""A byte position longer than this is not a number any file has (and never reaches int())."""


@dataclass(frozen=True)
class Conditions:
    """What the client asked for: the raw `Range`, `If-None-Match` and `If-Range` header values."""

    range: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None


class Content:
    """What to send for one file: 200 (all of it), 206 (one range) or 304 (nothing: not modified).

    Holds the open descriptor for 200/206 (the caller `close`s it): `fd`, `offset` and `length` for
    sendfile, or `chunks()` to read it in worker threads."""

    def __init__(self, *, status: int, name: str, size: int, mtime: float, etag: str, fd: int = -1,
                 offset: int = 0, length: int = 0) -> None:
        self.status = status
        self.name = name
        self.size = size  # the whole file's, at open time
        self.mtime = mtime
        self.etag = etag
        self.fd = fd
        self.offset = offset
        self.length = length  # bytes of the body
        self.sent = 0

    @property
    def headers(self) -> dict[str, str]:
        """ETag, Last-Modified, Accept-Ranges, and Content-Range for a 206."""
        return {"ETag": self.etag, "Last-Modified": formatdate(self.mtime, usegmt=True), **self.range_headers}

    @property
    def range_headers(self) -> dict[str, str]:
        """Accept-Ranges, and Content-Range for a 206 (what a front end with its own validators still sends)."""
        headers = {"Accept-Ranges": "bytes"}
        if self.status == 206:
            headers["Content-Range"] = f"bytes {self.offset}-{self.offset + self.length - 1}/{self.size}"
        return headers

    def select(self, offset: int, length: int) -> None:
        """Send only `length` bytes from `offset` of a whole file opened for a 200 (a range the caller read
        by its own rules): a 206."""
        if self.status != 200 or offset < 0 or length <= 0 or offset + length > self.size:
            raise ValueError(f"not a range of a {self.size} byte file: {offset}+{length}")
        self.status, self.offset, self.length = 206, offset, length

    async def chunks(self, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The body, read with pread in worker threads; stops early if the file shrank (see `complete`)."""
        while self.sent < self.length:
            want = min(chunk_size, self.length - self.sent)
            chunk = await asyncio.to_thread(os.pread, self.fd, want, self.offset + self.sent)
            if not chunk:
                return
            self.sent += len(chunk)
            yield chunk

    @property
    def complete(self) -> bool:
        """Every byte of the body was sent (False: the file shrank meanwhile; drop the connection)."""
        return self.sent == self.length

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def etag_of(st: os.stat_result) -> str:
    """A strong validator from inode, size and mtime in nanoseconds: any rewrite or replacement changes it."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match's weak comparison: `*`, or any listed tag equal to ours (a `W/` prefix ignored)."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_DIGITS else None


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single `bytes=` range within `size`; None to send the whole file (no range,
    a malformed one, another unit, or several ranges: RFC 9110 lets a server ignore Range); raises
    RangeNotSatisfiable when no byte of the range exists."""
    unit, equals, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not equals or "," in spec:
        return None  # several ranges are answered with the whole file, 200 (no multipart/byteranges)
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    if not first.strip():  # a suffix: the last N bytes
        count = _number(last)
        if count is None:
            return None
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header[:64]!r}: the file is {size} bytes", size=size)
        return max(0, size - count), min(count, size)
    start = _number(first)
    end = _number(last) if last.strip() else start
    if start is None or end is None or end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"range {header[:64]!r}: the file is {size} bytes", size=size)
    return start, (min(end, size - 1) if last.strip() else size - 1) - start + 1


def _if_range_holds(if_range: str | None, etag: str, mtime: float) -> bool:
    """A Range applies unless If-Range names another version (an ETag or a date, compared exactly)."""
    if if_range is None:
        return True
    value = if_range.strip()
    return value == etag if value.startswith(('"', "W/")) else value == formatdate(mtime, usegmt=True)


def _open_content(box: Sandbox, path: str, conditions: Conditions) -> Content:
    with box.parent(path) as (dir_fd, name, parts):
        fd, st = open_regular(dir_fd, name, display(parts))  # SECURITY: no link, FIFO, device or directory
    try:
        etag = etag_of(st)
        common: dict[str, Any] = {"name": parts[-1], "size": st.st_size, "mtime": st.st_mtime, "etag": etag}
        if conditions.if_none_match is not None and etag_matches(conditions.if_none_match, etag):
            os.close(fd)
            return Content(status=304, **common)
        wanted = None
        if conditions.range is not None and _if_range_holds(conditions.if_range, etag, st.st_mtime):
            wanted = byte_range(conditions.range, st.st_size)
        if wanted is None:
            return Content(status=200, fd=fd, offset=0, length=st.st_size, **common)
        return Content(status=206, fd=fd, offset=wanted[0], length=wanted[1], **common)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


async def open_content(volumes: VolumeService, volume_id: str, path: str,
                       conditions: Conditions = Conditions()) -> Content:
    """A regular file of a volume to send, honouring Range (one range), If-Range and If-None-Match; the caller
    closes it. 400 for links, FIFOs, devices and directories; 416 (RangeNotSatisfiable) past the end."""
    return await volumes.in_sandbox(volume_id, _open_content, path, conditions)


# -- uploads ------------------------------------------------------------------------------------------
def upload_name(filename: str | None) -> str:
    """The base name of an uploaded file's name (a browser may send `C:\\dir\\x.txt` or `dir/x.txt`), checked
    as one plain entry name; PathNotAllowed otherwise."""
    if not filename:
        raise ValidationFailed("every file of an upload needs a filename", details={"field": "filename"})
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return entry_name(base, "filename")


async def receive(incoming: IncomingFile, chunks: AsyncIterator[bytes]) -> int:
    """Stream `chunks` into `incoming` (written in worker threads, WRITE_BATCH at a time) and rename it into
    place once complete; any failure (size cap, disk limit, a client gone) discards it. Returns its size."""
    # The open runs in a thread a cancel cannot stop: it is awaited before any discard (else a request
    # cancelled mid-open would leave its temp file to the next start's cleanup).
    opening = asyncio.ensure_future(asyncio.to_thread(incoming.open))
    writing: asyncio.Future[None] | None = None  # the batch being written while the next one is read
    try:
        await asyncio.shield(opening)
        batch = bytearray()
        async for chunk in chunks:
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                if writing is not None:
                    await writing  # at most one batch in the thread and one being read: bounded memory
                writing = asyncio.ensure_future(asyncio.to_thread(incoming.write, bytes(batch)))
                batch = bytearray()
        if writing is not None:
            await writing
        if batch:
            await asyncio.to_thread(incoming.write, bytes(batch))
        return await asyncio.to_thread(incoming.commit)
    except BaseException:
        await asyncio.wait([opening])
        if writing is not None:
            # The thread cannot be stopped: wait for its write before the file goes (never a write after it).
            await asyncio.wait([writing])
            writing.exception()  # retrieved: the error being raised is the one that counts
        # Shielded: a cancelled request still removes its temp file (and gives back its disk budget).
        await asyncio.shield(asyncio.to_thread(incoming.discard))
        raise


UploadPart = tuple[str | None, AsyncIterator[bytes]]
"""One file of an upload: the name the client gave and its bytes."""


async def store_files(volumes: VolumeService, volume_id: str, directory: str,
                      parts: AsyncIterator[UploadPart]) -> dict[str, Any]:
    """Write each uploaded file into `directory` (made if missing) as it arrives: each at most
    volumes.max_upload_bytes (413), at most volumes.max_upload_files of them (413), held to the disk limit
    (409) while written, each renamed into place only once complete. A failure leaves no partial file; the
    files completed before it stay."""
    limits = volumes.limits
    folder = split_path(directory)  # 400 for a bad folder before a byte is read
    await volumes.record(volume_id)
    stored: list[dict[str, Any]] = []
    seen: set[str] = set()
    async for filename, chunks in parts:
        if len(stored) >= limits.max_upload_files:
            raise PayloadTooLarge(f"more than {limits.max_upload_files} files in one upload (volumes.max_upload_files)",
                                  details={"limit": limits.max_upload_files})
        name = upload_name(filename)
        if name in seen:
            raise ValidationFailed(f"filename: {name!r} appears twice in the upload", details={"field": "filename"})
        seen.add(name)
        incoming = await volumes.incoming(volume_id, display(folder) if folder else "", name, limits.max_upload_bytes)
        size = await receive(incoming, chunks)
        stored.append({"path": incoming.path, "size": size})
    if not stored:
        raise ValidationFailed("the upload holds no file (send multipart/form-data with file parts)",
                               details={"field": "files"})
    return {"directory": display(folder), "files": stored}
