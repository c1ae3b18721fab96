"""Writing a backup archive: the volume walked through its directory descriptor (no link followed, bounded
descriptors and memory: `volumes/walk.py`), as a tar stream compressed with zstd (or gzip) into a sink,
read at most `backups.write_limit_mib_s`. Runs in a worker thread; the event loop only hears progress.

Links, FIFOs, sockets and devices are not archived (reported as skipped): a link to `/etc` is neither
followed nor stored. A file that shrinks while it is read is padded with zeros to the size its header
declared (the archive stays well formed); one that grows is cut at that size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import zstandard

from lightd.errors import BackupQuotaExceeded, LightdError
from lightd.volumes.files import SAFE_MODE_BITS, kind_of
from lightd.volumes.patterns import MAX_PATTERNS, IgnoreRules
from lightd.volumes.sandbox import COPY_CHUNK, Skips, lstat_at, open_regular
from lightd.volumes.walk import ENTER, LEAF, TreeWalk

EXTENSIONS = {"zstd": "tar.zst", "gzip": "tar.gz"}
GZIP_LEVEL = 6
OUTPUT_CHUNK = 1024 * 1024  # compressed bytes handed to the sink per write
OUTPUT_QUEUE = 4  # compressed chunks waiting for the output thread


class Interrupted(LightdError):
    """The backup or restore was cancelled (daemon shutdown, server deleted)."""


class Sink(Protocol):
    """Where compressed bytes go (a local file, an S3 multipart upload); blocking, called from the thread."""

    def write(self, data: bytes) -> Any: ...


@dataclass
class Settings:
    compression: str
    zstd_level: int
    zstd_threads: int
    rate_bytes_s: float  # 0: unlimited
    max_depth: int
    max_bytes: int | None  # archive bytes past which the backup fails (local: max_local_bytes left)
    zstd_job_bytes: int = 0  # with zstd threads: input per compression job (0: zstd's own, several MiB)


@dataclass
class Result:
    size: int = 0
    sha256: str = ""
    files: int = 0
    directories: int = 0
    skips: Skips = field(default_factory=Skips)


class Throttle:
    """Blocks the reading thread to `rate` bytes/s on average (0: never); wakes for `stop` within 0.1 s."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.rate = rate
        self.stop = stop
        self.started = time.monotonic()
        self.taken = 0

    def take(self, count: int) -> None:
        if self.stop.is_set():
            raise Interrupted("cancelled")
        if not self.rate:
            return
        self.taken += count
        while (wait := self.started + self.taken / self.rate - time.monotonic()) > 0:
            if self.stop.wait(min(wait, 0.1)):
                raise Interrupted("cancelled")


class Progress:
    """Calls `report(percent)` when the percentage moves, at most every `interval` seconds (and at 100)."""

    def __init__(self, total: int, report: Callable[[int], None], interval: float) -> None:
        self.total = max(total, 1)
        self.report = report
        self.interval = interval
        self.done = 0
        self.sent = -1
        self.sent_at = 0.0

    def add(self, count: int) -> None:
        self.done += count
        percent = min(99, self.done * 100 // self.total)
        now = time.monotonic()
        if percent > self.sent and now - self.sent_at >= self.interval:
            self.sent, self.sent_at = percent, now
            self.report(percent)


class _Digest:
    """The compressed stream on its way to the sink: counted, hashed and held to `max_bytes`."""

    def __init__(self, sink: Sink, max_bytes: int | None) -> None:
        self.sink = sink
        self.max_bytes = max_bytes
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise BackupQuotaExceeded("the backup would pass backups.max_local_bytes for this server")
        self.hash.update(data)
        self.sink.write(data)
        return len(data)


class _OutputThread:
    """The compressed stream handed to a thread of its own that hashes it and writes it to the sink
    (`_Digest`), so the disk's write stalls and the hashing overlap with reading and compressing. At most
    OUTPUT_QUEUE chunks wait (memory bound); the sink's error comes back to the writer at its next write."""

    def __init__(self, digest: _Digest, stop: threading.Event) -> None:
        self.digest = digest
        self.stop = stop
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=OUTPUT_QUEUE)
        self._thread = threading.Thread(target=self._drain, name="backup-output", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.digest.write(data)
                except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
                    self.error = exc
            # after an error the queue is still emptied, so the producer never waits on a full one

    def _put(self, item: bytes | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if self.stop.is_set():
                raise Interrupted("cancelled")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> int:
        self._put(data)
        return len(data)

    def close(self) -> None:
        """Wait until everything queued is in the sink (its error raised here)."""
        self._put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """The producer failed: drop what is queued and wait for the write in progress (the caller closes the
        sink next, which must not happen under a write)."""
        self.error = self.error or Interrupted("cancelled")
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # when full, the thread drains it without writing and waits for more
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=0.1)
            self._thread.join(timeout=0.1)


class _TarTarget:
    """What tarfile writes to: its plain tar stream into the compressor."""

    def __init__(self, settings: Settings, out: _Digest | _OutputThread) -> None:
        self.written = 0
        if settings.compression == "zstd":
            params = zstandard.ZstdCompressionParameters.from_level(settings.zstd_level, threads=settings.zstd_threads,
                                                                    job_size=settings.zstd_job_bytes)
            self._zstd = zstandard.ZstdCompressor(compression_params=params).stream_writer(
                out, write_size=OUTPUT_CHUNK, write_return_read=True, closefd=False)  # type: ignore[arg-type]
            self._zlib = None
        else:
            self._zstd = None
            self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
        self._out = out

    def write(self, data: Any) -> int:
        self.written += len(data)
        if self._zstd is not None:
            return self._zstd.write(data)
        self._out.write(self._zlib.compress(data))  # type: ignore[union-attr]
        return len(data)

    def tell(self) -> int:
        return self.written

    def finish(self) -> None:
        if self._zstd is not None:
            self._zstd.flush(zstandard.FLUSH_FRAME)
        else:
            self._out.write(self._zlib.flush())  # type: ignore[union-attr]


class _FileData:
    """A regular file's bytes for tarfile: exactly `size` of them, throttled and counted."""

    def __init__(self, src: BinaryIO, size: int, throttle: Throttle, progress: Progress) -> None:
        self.src, self.left, self.throttle, self.progress = src, size, throttle, progress

    def read(self, count: int = COPY_CHUNK) -> bytes:
        count = min(count, self.left)
        if count <= 0:
            return b""
        self.throttle.take(count)
        data = self.src.read(count)
        if len(data) < count:  # the file shrank since its header was written: keep the archive well formed
            data += b"\0" * (count - len(data))
        self.left -= count
        self.progress.add(count)
        return data


IGNORE_FILE = ".lightdignore"
MAX_IGNORE_FILE_BYTES = 64 * 1024


def parse_ignore_file(data: bytes) -> list[str]:
    """The patterns of a `.lightdignore` (its first MAX_IGNORE_FILE_BYTES, then MAX_PATTERNS lines)."""
    text = data[:MAX_IGNORE_FILE_BYTES].decode("utf-8", "surrogateescape")
    return text.splitlines()[:MAX_PATTERNS]


def read_ignore_file(root_fd: int) -> list[str]:
    """The volume's `.lightdignore` patterns (none when it is missing or not a regular file)."""
    st = lstat_at(root_fd, IGNORE_FILE)
    if st is None or not stat.S_ISREG(st.st_mode):
        return []
    fd, _ = open_regular(root_fd, IGNORE_FILE, IGNORE_FILE)  # SECURITY: never a FIFO, device or link
    with os.fdopen(fd, "rb") as handle:
        return parse_ignore_file(handle.read(MAX_IGNORE_FILE_BYTES))


def _walk(root_fd: int, rules: IgnoreRules, max_depth: int) -> TreeWalk:
    walk: TreeWalk

    def pruned(name: str) -> bool:  # an ignored folder is not even entered
        return rules.ignored((*walk.names, name), True)

    walk = TreeWalk(root_fd, max_depth=max_depth, too_deep="skip", prune=pruned if rules else None)
    return walk


def planned_bytes(root_fd: int, rules: IgnoreRules, max_depth: int, stop: threading.Event) -> int:
    """Bytes of the regular files a backup will read (for its progress), by an lstat-only walk."""
    total = 0
    for event, node in _walk(root_fd, rules, max_depth):
        if stop.is_set():
            raise Interrupted("cancelled")
        if event == LEAF and stat.S_ISREG(node.st.st_mode) and not rules.ignored(node.parts, False):
            total += node.st.st_size
    return total


def write_archive(root_fd: int, rules: IgnoreRules, sink: Sink, settings: Settings, stop: threading.Event,
                  report: Callable[[int], None], progress_interval: float = 1.0) -> Result:
    """Archive the volume open at `root_fd` into `sink`; its size and sha256, and what was skipped."""
    progress = Progress(planned_bytes(root_fd, rules, settings.max_depth, stop), report, progress_interval)
    throttle = Throttle(settings.rate_bytes_s, stop)
    digest = _Digest(sink, settings.max_bytes)
    output = _OutputThread(digest, stop)
    try:
        result = _archive(root_fd, rules, settings, _TarTarget(settings, output), throttle, progress)
        output.close()
    except BaseException:
        output.abandon()
        raise
    result.size, result.sha256 = digest.size, digest.hash.hexdigest()
    return result


def _archive(root_fd: int, rules: IgnoreRules, settings: Settings, target: _TarTarget, throttle: Throttle,
             progress: Progress) -> Result:
    result = Result()
    tar = tarfile.TarFile(fileobj=target, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
    tar.copybufsize = COPY_CHUNK
    walk = _walk(root_fd, rules, settings.max_depth)
    for event, node in walk:
        if event == ENTER:
            throttle.take(0)
            tar.addfile(_info("/".join(node.parts), node.st, tarfile.DIRTYPE))
            result.directories += 1
        elif event == LEAF:
            if not stat.S_ISREG(node.st.st_mode):
                # SECURITY: symlink escape — a link is not followed, nor stored to be restored later
                result.skips.add(node.parts, f"{kind_of(node.st.st_mode)} not archived")
                continue
            if rules.ignored(node.parts, False):
                continue
            try:
                fd, st = open_regular(node.parent_fd, node.name, "/".join(node.parts))
            except LightdError as exc:  # swapped for a link or removed since the listing
                result.skips.add(node.parts, exc.message)
                continue
            with os.fdopen(fd, "rb", buffering=0) as src:
                info = _info("/".join(node.parts), st, tarfile.REGTYPE)
                tar.addfile(info, _FileData(src, st.st_size, throttle, progress))  # type: ignore[arg-type]
            result.files += 1
    if walk.partial:
        result.skips.add("/", walk.partial)
    tar.close()
    target.finish()
    return result


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    info.mode = stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS  # never setuid/setgid/sticky into a backup
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    return info

