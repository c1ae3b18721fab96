"""A selection of a volume as a tar.gz or zip made on the fly, for download: nothing is written to disk and
memory stays bounded.

A worker thread walks the selection through the sandbox (`archives.add_source`: links and special files
skipped, never followed; `volumes.max_depth` and `archive_max_entries` apply) and writes the archive into a
`ChunkPipe`, which hands it to the event loop in CHUNK pieces with at most DEPTH of them waiting: a slow
client slows the thread down instead of filling memory. Zip entries use data descriptors (the output is not
seekable); tar headers are dropped as soon as written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from lightd.config import VolumeLimits
from lightd.errors import ValidationFailed
from lightd.volumes.archives import ArchiveWriter, add_source
from lightd.volumes.sandbox import Sandbox, Skips, display, split_path

if TYPE_CHECKING:
    from lightd.volumes.service import VolumeService

StreamFormat = Literal["tar.gz", "zip"]
MEDIA_TYPES: dict[str, str] = {"tar.gz": "application/gzip", "zip": "application/zip"}
CHUNK = 256 * 1024
DEPTH = 4
"""Chunks waiting between the archiving thread and the client at most (memory: DEPTH x CHUNK)."""
GZIP_LEVEL = 6
"""zlib's default: level 9 costs twice the CPU for a few percent, on the download's critical path."""
PUT_WAIT = 1.0
"""Seconds the thread waits on a full pipe before checking whether the reader went away."""
MAX_SELECTION = 1000


class PipeClosed(Exception):
    """The reader is gone (the client disconnected): the archiving thread stops."""


class ChunkPipe(io.RawIOBase):
    """Bytes written by one worker thread, read as chunks on the event loop, with bounded buffering."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(DEPTH)
        self._buffer = bytearray()
        self._finished = False
        self.closed_by_reader = False

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass  # nothing is held back but the current chunk, which `finish` sends (and no error once closed)

    def ready(self) -> None:
        """An empty chunk ahead of the data: the stream has checked its input and begins."""
        self._put(b"")

    def write(self, data: Any) -> int:  # the worker thread
        if self._finished:
            return len(data)  # an abandoned writer's close at garbage collection: nobody reads any more
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self._put(chunk)
        return len(data)

    def finish(self) -> None:
        """The end of the stream (the thread's last act, also after a failure: the reader stops waiting)."""
        if self._finished:
            return
        self._finished = True
        if self._buffer and not self.closed_by_reader:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self._put(chunk)
        if not self.closed_by_reader:
            self._put(None)

    def _put(self, item: bytes | None) -> None:
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            if self.closed_by_reader:
                future.cancel()
                raise PipeClosed()
            try:
                future.result(PUT_WAIT)  # blocks while the client is slower than the archiver
                return
            except concurrent.futures.TimeoutError:
                continue

    async def next_chunk(self) -> bytes | None:
        """The next chunk; None at the end."""
        return await self._queue.get()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    def close_reader(self) -> None:
        """The reader stops (on the event loop): the thread's next write raises PipeClosed."""
        self.closed_by_reader = True
        while not self._queue.empty():  # unblock a put waiting for room
            self._queue.get_nowait()


def _write_archive(box: Sandbox, sources: list[tuple[str, ...]], fmt: str, pipe: ChunkPipe,
                   limits: VolumeLimits) -> int:
    skips, counts = Skips(), {"files": 0, "directories": 0}
    try:
        for parts in sources:
            box.lstat(display(parts) if parts else "")  # 404 / 400 before the first byte
        pipe.ready()  # the selection exists: the response can start
        writer = ArchiveWriter(pipe, fmt, GZIP_LEVEL)  # type: ignore[arg-type]
        for parts in sources:
            add_source(box, parts, writer, (-1, -1), skips, counts, limits)
        writer.close()  # only on success: a failed archive never gets the trailer that makes it look whole
    finally:
        pipe.finish()
    return counts["files"]


class ArchiveStream:
    """An archive being made in a worker thread: iterate `chunks()`, then `await finished()` (its failure, if
    any); `close()` stops it early. The selection is checked (404/400) by `start` before any byte."""

    def __init__(self, volumes: VolumeService, volume_id: str, paths: list[str], fmt: StreamFormat) -> None:
        if fmt not in MEDIA_TYPES:
            raise ValidationFailed(f"format: one of {', '.join(MEDIA_TYPES)}", details={"field": "format"})
        if not paths or len(paths) > MAX_SELECTION:
            raise ValidationFailed(f"paths: 1 to {MAX_SELECTION} paths", details={"field": "paths"})
        self.sources = [split_path(p) for p in paths]
        self.fmt = fmt
        self.media_type = MEDIA_TYPES[fmt]
        self.filename = _download_name(self.sources, fmt)
        self._volumes = volumes
        self._volume_id = volume_id
        self._pipe: ChunkPipe | None = None
        self._job: asyncio.Future[int] | None = None

    async def start(self) -> None:
        """Start the archiving thread; raises (404, 400) here if a selected path is missing or refused."""
        self._pipe = pipe = ChunkPipe(asyncio.get_running_loop())
        self._job = asyncio.ensure_future(self._volumes.in_sandbox(
            self._volume_id, _write_archive, self.sources, self.fmt, pipe, self._volumes.limits))
        # The first chunk (empty) says the selection was found; an error before it is the request's error.
        first = asyncio.ensure_future(pipe.next_chunk())
        await asyncio.wait((first, self._job), return_when=asyncio.FIRST_COMPLETED)
        if not first.done() or first.result() is None:
            first.cancel()
            await self._job  # raises the thread's error (a missing path: 404)
            raise ValidationFailed("nothing to archive")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The archive's bytes; raises the thread's error (e.g. a tree moved meanwhile) at the end."""
        assert self._pipe is not None and self._job is not None
        async for chunk in self._pipe.chunks():
            if chunk:
                yield chunk
        await self._job

    async def close(self) -> None:
        """Stop the thread if still running and wait for it (it stops at its next write)."""
        if self._pipe is not None:
            self._pipe.close_reader()
        if self._job is not None:
            with contextlib.suppress(Exception):  # already raised through chunks(), or the client left
                await asyncio.shield(self._job)


def _download_name(sources: list[tuple[str, ...]], fmt: str) -> str:
    name = sources[0][-1] if len(sources) == 1 and sources[0] else "files"
    return f"{name}.{fmt}"


async def open_archive(volumes: VolumeService, volume_id: str, paths: list[str],
                       fmt: StreamFormat = "tar.gz") -> ArchiveStream:
    """A started ArchiveStream of `paths` (the caller iterates `chunks()` and always `close()`s it)."""
    stream = ArchiveStream(volumes, volume_id, paths, fmt)
    try:
        await stream.start()
    except BaseException:
        await stream.close()
        raise
    return stream
