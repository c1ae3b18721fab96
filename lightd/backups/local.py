"""Local backups: `<data_dir>/backups/<server>/<backup id>.tar.zst` (0700 folders, 0600 files), never inside
a volume. An archive is written as `<id>.part` and renamed when complete; a `.part` found at start is what a
dead daemon was writing."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from lightd.backups.archive import EXTENSIONS

PARTIAL = ".part"
READ_CHUNK = 1024 * 1024


class LocalSink:
    """An archive being written (blocking; from the worker thread)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.rename(self.partial, self.final)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.partial.unlink(missing_ok=True)


class LocalBackups:
    """Where local backups live, by server and backup id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, server: str, backup_id: str, compression: str) -> Path:
        return self.root / server / f"{backup_id}.{EXTENSIONS[compression]}"

    def sink(self, server: str, backup_id: str, compression: str) -> LocalSink:
        return LocalSink(self.path(server, backup_id, compression))

    def open(self, server: str, backup_id: str, compression: str) -> BinaryIO:
        """The archive for reading (blocking)."""
        return open(self.path(server, backup_id, compression), "rb")  # noqa: SIM115 - the caller closes it

    async def delete(self, server: str, backup_id: str, compression: str) -> None:
        final = self.path(server, backup_id, compression)
        for path in (final, final.with_name(final.name + PARTIAL)):
            await asyncio.to_thread(path.unlink, True)

    async def delete_server(self, server: str) -> None:
        """Every local backup of a server."""
        await asyncio.to_thread(shutil.rmtree, self.root / server, True)

    def remove_partials(self) -> int:
        """Remove every `.part` (blocking; at start, when no backup runs)."""
        removed = 0
        for partial in self.root.glob(f"*/*{PARTIAL}"):
            partial.unlink(missing_ok=True)
            removed += 1
        return removed

    async def stream(self, server: str, backup_id: str, compression: str) -> tuple[AsyncIterator[bytes], int]:
        """The archive's bytes, read in a worker thread, and its size."""
        handle = await asyncio.to_thread(self.open, server, backup_id, compression)
        size = os.fstat(handle.fileno()).st_size

        async def chunks() -> AsyncIterator[bytes]:
            try:
                left = size
                while left > 0 and (chunk := await asyncio.to_thread(handle.read, min(READ_CHUNK, left))):
                    left -= len(chunk)
                    yield chunk
            finally:
                handle.close()

        return chunks(), size
