"""The install log: the output of the last install script run. Published chunk by chunk (`install_log` bus
events, `install_output` frames on the console socket), kept in memory and in `install.log` next to the
entrypoint, both bounded in bytes (`console.install_log_bytes`), and read back for
GET /containers/{id}/install-log."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from lightd.errors import NotFound
from lightd.servers.console import LineSplitter

if TYPE_CHECKING:
    from lightd.servers.server import Server

log = logging.getLogger(__name__)

FILE_NAME = "install.log"
FLUSH_SECONDS = 1.0
"""While the script runs, the file is rewritten at most this often (so the route shows progress)."""
READ_SLACK_BYTES = 128 * 1024
"""Read past `install_log_bytes`: the file may hold one line over the bound and the note heading it."""
STOP_TIMEOUT = 10.0

TAIL_MAX_CHARS = 8192
"""Largest install-log tail kept in `install_error`."""


class InstallLog:
    """One install run's output. Overflow policy: the oldest lines are dropped (counted) so the lines kept
    weigh at most `max_bytes` (the newest line always stays); the file then opens with a note saying how
    much was dropped. A hostile script printing gigabytes costs `max_bytes` of memory and of disk."""

    def __init__(self, server: Server, max_bytes: int | None = None) -> None:
        self.server = server
        self.path: Path = server.data_path / FILE_NAME
        self.max_bytes = max_bytes if max_bytes is not None else server.config.console.install_log_bytes
        self.lines: deque[str] = deque()
        self.size = 0
        """Bytes of `lines` in the file (UTF-8, one newline each)."""
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._sizes: deque[int] = deque()
        self._splitter = LineSplitter(server.config.console.line_max_bytes)
        self._dirty = False
        self._stopping = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # -- output --------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._add(self._splitter.feed(chunk))

    def finish(self) -> None:
        self._add(self._splitter.flush())

    def _add(self, lines: list[str]) -> None:
        if not lines:
            return
        for line in lines:
            weight = len(line.encode("utf-8", "surrogatepass")) + 1
            self.lines.append(line)
            self._sizes.append(weight)
            self.size += weight
        while self.size > self.max_bytes and len(self.lines) > 1:
            self.lines.popleft()
            weight = self._sizes.popleft()
            self.size -= weight
            self.dropped_lines += 1
            self.dropped_bytes += weight
        self._dirty = True
        self.server.events.publish("install_log", self.server.id, lines)

    def tail(self, count: int = 50, max_chars: int = TAIL_MAX_CHARS) -> str:
        """The last `count` lines, at most `max_chars` of them (the end kept): this goes into
        `install_error`, the database and remote-sync updates, so a flood of long lines must not."""
        start = max(len(self.lines) - count, 0)
        text = "\n".join(self.lines[i] for i in range(start, len(self.lines)))
        return text if len(text) <= max_chars else "…" + text[-max_chars:]

    def text(self) -> str:
        """The file's contents: a note when lines were dropped, then the lines kept."""
        note = ""
        if self.dropped_lines:
            note = (f"[lightd] {self.dropped_lines} earlier lines ({self.dropped_bytes} bytes) are not kept: the "
                    f"install log keeps the last {self.max_bytes} bytes\n")
        return note + "".join(line + "\n" for line in self.lines)

    # -- the file ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """A new run: the file is emptied at once (it never shows the previous run as this one's) and is
        rewritten while the script runs."""
        await self._write()
        self._flusher = self.server.tasks.spawn(self._flush_loop(), name=f"install-log:{self.server.id}")

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            if self._dirty and not self._stopping.is_set():
                await self._write()

    async def close(self, *, save: bool = True) -> None:
        """Stop rewriting the file; with `save`, write it one last time (not after a cancelled install: the
        server may be being deleted)."""
        self._stopping.set()
        if self._flusher is not None:
            # Waited for, not cancelled: a write in a thread would go on and could land after the last one.
            await asyncio.wait([self._flusher], timeout=STOP_TIMEOUT)
        if save:
            await self._write()

    async def _write(self) -> None:
        self._dirty = False
        data = self.text().encode("utf-8", "surrogatepass")
        try:
            await asyncio.to_thread(_replace_file, self.path, data)
        except OSError as exc:
            log.warning("%s: cannot write the install log: %s", self.server.id, exc)


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # SECURITY: symlink write: never write through a link planted at either name (the data dir is lightd's
    # own, but this stays safe if that ever changes): whatever is at the temporary name is unlinked (a link
    # itself, never its target), the file is created anew, and the rename replaces a link at the log's name.
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_log_file(path: Path, max_bytes: int, tail: int | None) -> str | None:
    """The end of the log at `path` (at most `max_bytes`, whole lines), its last `tail` lines when given;
    None when there is no log (no such file, or not a regular file)."""
    try:
        # SECURITY: symlink read: O_NOFOLLOW, and a FIFO or device at the name is not opened for reading
        # (O_NONBLOCK) nor read (S_ISREG).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # ELOOP: a link where the log should be
        log.warning("install log %s not read: %s", path, exc)
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        start = max(info.st_size - max_bytes, 0)
        handle.seek(start)
        data = handle.read(max_bytes)
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    text = data.decode("utf-8", "replace")
    if tail is not None:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        text = "".join(line + "\n" for line in lines[-tail:])
    return text


async def install_log_text(server: Server, tail: int | None = None) -> str:
    """The last install run's log of `server` (its last `tail` lines when given); NotFound when no install
    script has run."""
    cap = server.config.console.install_log_bytes + READ_SLACK_BYTES
    text = await asyncio.to_thread(read_log_file, server.data_path / FILE_NAME, cap, tail)
    if text is None:
        raise NotFound(f"container {server.id} has no install log: no install script has run for it",
                       details={"internal_id": server.id})
    return text
