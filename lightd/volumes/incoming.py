"""A file streamed into a volume from outside (a pull from a URL): written to a temp file in its destination
folder, held to a size cap and to the volume's disk limit chunk by chunk, and renamed into place only once
complete, so a failure, a cancel or a daemon stop leaves no partial file (a stop's temp file is removed by
the next start's `clean_temp_files`). Synchronous: callers run each step in a worker thread."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from lightd.errors import PathNotAllowed, PayloadTooLarge
from lightd.volumes.denylist import Denylist
from lightd.volumes.files import SAFE_MODE_BITS
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import (
    TEMP_PREFIX, Sandbox, adopt_owner, create_temp, display, lstat_at, os_error, require_regular, split_path,
    unlink_quietly,
)


def entry_name(name: str, field: str = "file_name") -> str:
    """`name` if it names one entry of a folder (no separator, not `.`/`..`, no NUL, not lightd's temp
    prefix); PathNotAllowed otherwise."""
    parts = split_path(name)
    if len(parts) != 1 or parts[0] != name:
        raise PathNotAllowed(f"{field}: must be a plain file name, not a path: {name[:64]!r}")
    if name.startswith(TEMP_PREFIX):
        raise PathNotAllowed(f"{field}: names starting with {TEMP_PREFIX} are lightd's temp files")
    return name


class IncomingFile:
    """One file arriving in `directory` of a volume (made if missing) under `name`; `open`, `write`..., then
    `commit` or `discard` (always one of them). The steps are serialized: a `discard` from a cancelled caller
    waits for a `write` still running in another worker thread, so no descriptor is closed under it."""

    def __init__(self, root: Path, directory: str, name: str, *, max_bytes: int, budget: WriteBudget,
                 denylist: Denylist | None = None) -> None:
        self.root = root
        self.parts = (*split_path(directory), entry_name(name))
        self.denylist = denylist
        if denylist is not None:
            denylist.check(self.parts)  # 403 before a byte arrives
        self.max_bytes = max_bytes
        self.budget = budget
        self.size = 0
        self._dir_fd = -1
        self._fd = -1
        self._tmp = ""
        self._lock = threading.Lock()
        self._done = False

    @property
    def path(self) -> str:
        return display(self.parts)

    def open(self) -> None:
        """Make the destination folder (no link followed) and an empty temp file in it."""
        with self._lock:
            if self._done:
                raise ValueError("IncomingFile: already committed or discarded")
            with Sandbox(self.root, self.denylist) as box, box.directory(self.parts[:-1], create=True) as dir_fd:
                self._dir_fd = os.dup(dir_fd)
            self._fd, self._tmp = create_temp(self._dir_fd)

    def write(self, data: bytes) -> None:
        """Append `data`; PayloadTooLarge past `max_bytes`, DiskQuotaExceeded past the disk limit."""
        with self._lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            raise ValueError("IncomingFile: not open (or already committed or discarded)")
        if self.size + len(data) > self.max_bytes:
            raise PayloadTooLarge(f"{self.path}: larger than the limit of {self.max_bytes} bytes",
                                  details={"limit": self.max_bytes})
        self.budget.reserve(len(data))  # before a byte is written
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += len(data)

    def commit(self) -> int:
        """Rename the complete file into place, replacing a regular file of that name (never a link); its size."""
        with self._lock:
            return self._commit()

    def _commit(self) -> int:
        name = self.parts[-1]
        try:
            existing = lstat_at(self._dir_fd, name)
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    raise PathNotAllowed(f"{self.path}: is a symbolic link; links are not written through")  # SECURITY
                require_regular(existing, self.path)
            mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o644
            os.fchmod(self._fd, mode & SAFE_MODE_BITS)  # SECURITY: setuid/setgid/sticky never stored
            adopt_owner(self._fd, existing or os.fstat(self._dir_fd))
            os.fsync(self._fd)
            # SECURITY: symlink escape — renameat replaces the directory entry; a link is never resolved.
            os.rename(self._tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            self._discard()
            raise os_error(exc, self.path) from None
        except BaseException:
            self._discard()
            raise
        self._tmp = ""
        self._close()
        if existing is not None and existing.st_nlink == 1:
            self.budget.release(existing.st_size)
        return self.size

    def discard(self) -> None:
        """Remove the temp file and give back the bytes it held against the disk limit."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._tmp and self._dir_fd >= 0:
            unlink_quietly(self._dir_fd, self._tmp)
            self.budget.rollback()
        self._tmp = ""
        self._close()

    def _close(self) -> None:
        self._done = True
        for fd in (self._fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._dir_fd = -1
