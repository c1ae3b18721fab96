"""One SFTP session: asyncssh's SFTPServer over a server's volume, through the same sandbox as the HTTP file
API. Paths are normalised inside the volume ("/" is its root; `..` cannot climb above it), then walked from
the volume's directory descriptor with `openat(O_NOFOLLOW)` at every component; final components are
touched with `dir_fd=` and no-follow calls. A link is never followed out of the volume: `stat`, reads and
listings follow a final link only to a place inside the volume (resolved the same way, at most
8 times); writes, removes, renames and setstat act on the link itself or refuse it.

Every filesystem call runs in a worker thread; asyncssh hands a session one request at a time.
Writes draw on the volume's disk limit as they grow a file (`quota.WriteBudget`). When a write would pass
it, the request fails with "disk quota exceeded" and the file is put back as this handle found it: a file
the upload created is removed, one it appended to is cut back to its size at open; later writes on that
handle are refused. So no partial file is ever left beyond what the limit allows.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from lightd.errors import AlreadyExists, DiskQuotaExceeded, Forbidden, LightdError, NotFound, PathNotAllowed
from lightd.sftp.volume_ops import (
    WRITE_FLAGS, OpenFile, adopt_owner_of_dir, follow, lstat_parts, open_file, refuse_owner_change, set_attrs,
    times_ns, volume_parts,
)
from lightd.volumes.files import SAFE_MODE_BITS, check_tree_allowed
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import Sandbox, display, entries_at, lstat_at

if TYPE_CHECKING:
    from lightd.sftp.server import Login, SftpServer

log = logging.getLogger(__name__)
T = TypeVar("T")
LISTING_BATCH = 128


def sftp_error(exc: LightdError) -> asyncssh.SFTPError:
    """The SFTP status for a LightdError of the sandbox."""
    if isinstance(exc, NotFound):
        return asyncssh.SFTPNoSuchFile(exc.message)
    if isinstance(exc, (PathNotAllowed, Forbidden)):
        return asyncssh.SFTPPermissionDenied(exc.message)
    if isinstance(exc, AlreadyExists):
        return asyncssh.SFTPFileAlreadyExists(exc.message)
    if isinstance(exc, DiskQuotaExceeded):
        return asyncssh.SFTPQuotaExceeded(f"disk_quota_exceeded: {exc.message}")
    return asyncssh.SFTPFailure(exc.message)

def refuse_setid(mode: int | None) -> None:
    if mode is not None and stat.S_IMODE(mode) & ~SAFE_MODE_BITS:
        # SECURITY: setuid files in volumes (a setuid-root file is a root shell for any local account)
        raise asyncssh.SFTPPermissionDenied("setuid, setgid and sticky bits are not allowed")


class Listing:
    """A directory being listed (opendir/readdir): `.`, `..`, then its entries in batches, lstat'ed."""

    def __init__(self, session: SftpSession, path: bytes) -> None:
        self.session = session
        self.path = path

    def __aiter__(self) -> AsyncIterator[SFTPName]:
        return self._names()

    async def _names(self) -> AsyncIterator[SFTPName]:
        session = self.session
        session.listings.add(self)
        fd, scan = -1, None
        try:
            parts = volume_parts(self.path)

            def open_dir() -> tuple[int, Any, os.stat_result]:
                resolved, _ = follow(session.box, parts)
                with session.box.directory(resolved) as dir_fd:
                    own = os.dup(dir_fd)
                return own, entries_at(own), os.fstat(own)

            fd, scan, st = await session.run(open_dir)
            for dot in (".", ".."):
                yield session.name(dot, st)
            while True:
                batch = await session.run(lambda: [entry for _, entry in zip(range(LISTING_BATCH), scan)])
                for name, entry_st in batch:
                    yield session.name(name, entry_st)
                if len(batch) < LISTING_BATCH:
                    return
        finally:
            session.listings.discard(self)
            if scan is not None:
                scan.close()
            if fd >= 0:
                os.close(fd)


class SftpSession(asyncssh.SFTPServer):
    """asyncssh's SFTP server for one session of `login`, over its server's volume."""

    def __init__(self, chan: asyncssh.SSHServerChannel, login: Login, owner: SftpServer, box: Sandbox) -> None:
        super().__init__(chan)
        self.login = login
        self.owner = owner
        self.box = box
        self.files: set[OpenFile] = set()
        self.listings: set[Listing] = set()
        self.closed = False  # exit() ran (or the session was refused): nothing left to close
        self.ended = False  # its connection is being closed (revocation, deletion, shutdown)

    # -- plumbing ----------------------------------------------------------------------------------
    async def run(self, operation: Callable[..., T], *args: Any) -> T:
        """Run a sandbox operation in a worker thread; LightdError becomes its SFTP status."""
        self.owner.check_alive(self)
        try:
            return await asyncio.to_thread(operation, *args)
        except LightdError as exc:
            raise sftp_error(exc) from None
        except (OSError, asyncssh.SFTPError):
            raise  # asyncssh answers with the matching status
        except Exception:
            # asyncssh would send the exception's text to the client: log it here, send nothing of it.
            log.exception("sftp: %s failed", getattr(operation, "__name__", "operation"))
            raise asyncssh.SFTPFailure("internal error") from None

    async def write_op(self, action: str | None, operation: Callable[..., T], *args: Any, paths: tuple[str, ...] = ()) -> T:
        """A change to the volume: refused while the session is read-only; reported as activity."""
        reason = self.owner.read_only_reason(self.login)
        if reason:
            raise asyncssh.SFTPPermissionDenied(f"read-only: {reason}")
        result = await self.run(operation, *args)
        if action:
            self.owner.activity(self.login, action, paths)
        return result

    def name(self, filename: str, st: os.stat_result) -> SFTPName:
        return SFTPName(os.fsencode(filename), attrs=SFTPAttrs.from_local(st))

    def format_user(self, uid: int | None) -> str:
        return "" if uid is None else str(uid)  # no host user database lookups: container uids are numbers

    def format_group(self, gid: int | None) -> str:
        return "" if gid is None else str(gid)

    def _refuse_more_files(self) -> None:
        if len(self.files) + len(self.listings) >= self.owner.config.max_open_files:
            raise asyncssh.SFTPFailure(f"too many open files (at most {self.owner.config.max_open_files})")

    # -- paths and attributes ------------------------------------------------------------------------
    def realpath(self, path: bytes) -> bytes:
        return b"/" + os.fsencode("/".join(volume_parts(path)))

    async def stat(self, path: bytes) -> os.stat_result:
        return (await self.run(follow, self.box, volume_parts(path)))[1]

    async def lstat(self, path: bytes) -> os.stat_result:
        return await self.run(lstat_parts, self.box, volume_parts(path))

    async def readlink(self, path: bytes) -> bytes:
        def read(parts: tuple[str, ...]) -> str:
            with self.box.parent(display(parts)) as (dir_fd, name, _):
                return os.readlink(name, dir_fd=dir_fd)

        return os.fsencode(await self.run(read, volume_parts(path)))

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._setstat(path, attrs, links=False)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._setstat(path, attrs, links=True)

    async def _setstat(self, path: bytes, attrs: SFTPAttrs, *, links: bool) -> None:
        refuse_setid(attrs.permissions)
        parts = volume_parts(path)
        budget = await self.owner.write_budget(self.login)
        await self.write_op(None, functools.partial(set_attrs, links=links), self.box, parts, attrs, budget)

    async def statvfs(self, path: bytes) -> os.statvfs_result:
        return await self.run(lambda: os.statvfs(self.box.root))

    # -- files ---------------------------------------------------------------------------------------
    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> OpenFile:
        self._refuse_more_files()
        parts = volume_parts(path)
        if pflags & WRITE_FLAGS:
            budget = await self.owner.write_budget(self.login)
            handle = await self.write_op(None, open_file, self.box, parts, pflags, budget)
        else:
            handle = await self.run(open_file, self.box, parts, pflags, WriteBudget())
        self.files.add(handle)
        return handle

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, OpenFile)
        return await self.run(file_obj.read, offset, size)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, OpenFile)
        if not file_obj.writable:
            raise asyncssh.SFTPPermissionDenied("file not opened for writing")
        return await self.write_op(None, file_obj.write, offset, data)

    async def fstat(self, file_obj: object) -> os.stat_result:
        assert isinstance(file_obj, OpenFile)
        return await self.run(os.fstat, file_obj.fd)

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        assert isinstance(file_obj, OpenFile)
        refuse_setid(attrs.permissions)

        def apply() -> None:
            st = os.fstat(file_obj.fd)
            refuse_owner_change(attrs, st)
            if attrs.size is not None:
                file_obj.truncate(attrs.size)
            if attrs.permissions is not None:
                os.fchmod(file_obj.fd, attrs.permissions & SAFE_MODE_BITS)  # SECURITY: no setuid
            if attrs.atime is not None or attrs.mtime is not None:
                os.utime(file_obj.fd, ns=times_ns(attrs, st))

        await self.write_op(None, apply)

    async def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        await self.run(os.fsync, file_obj.fd)

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        self.files.discard(file_obj)
        wrote = file_obj.wrote and not file_obj.quota_hit
        await asyncio.to_thread(file_obj.close)
        if wrote:
            self.owner.activity(self.login, "upload", (file_obj.path,))

    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:  # type: ignore[override]
        self._refuse_more_files()
        return aiter(Listing(self, path))

    # -- namespace -----------------------------------------------------------------------------------
    async def remove(self, path: bytes) -> None:
        parts = volume_parts(path)
        budget = await self.owner.write_budget(self.login)

        def remove_entry() -> None:
            with self.box.parent(display(parts)) as (dir_fd, name, _):
                st = lstat_at(dir_fd, name)
                if st is None:
                    raise NotFound(f"{display(parts)}: no such file")
                if stat.S_ISDIR(st.st_mode):
                    raise asyncssh.SFTPFileIsADirectory(f"{display(parts)}: is a directory (use rmdir)")
                os.unlink(name, dir_fd=dir_fd)  # SECURITY: unlinkat removes a link, never its target
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                budget.release(st.st_size)

        await self.write_op("delete", remove_entry, paths=(display(parts),))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        parts = volume_parts(path)
        mode = (attrs.permissions if attrs.permissions is not None else 0o755) & SAFE_MODE_BITS

        def make() -> None:
            with self.box.parent(display(parts)) as (dir_fd, name, _):
                os.mkdir(name, mode, dir_fd=dir_fd)  # mkdirat never follows a link in the last component
                adopt_owner_of_dir(dir_fd, name)

        await self.write_op("mkdir", make, paths=(display(parts),))

    async def rmdir(self, path: bytes) -> None:
        parts = volume_parts(path)

        def remove_dir() -> None:
            with self.box.parent(display(parts)) as (dir_fd, name, _):
                os.rmdir(name, dir_fd=dir_fd)  # unlinkat(AT_REMOVEDIR): a link is never entered

        await self.write_op("rmdir", remove_dir, paths=(display(parts),))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=True)

    async def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        source, destination = volume_parts(oldpath), volume_parts(newpath)
        budget = await self.owner.write_budget(self.login)

        def move() -> None:
            with self.box.parent(display(source)) as (src_fd, src_name, _), \
                    self.box.parent(display(destination)) as (dst_fd, dst_name, _):
                if lstat_at(src_fd, src_name) is None:
                    raise NotFound(f"{display(source)}: no such file or directory")
                check_tree_allowed(self.box, src_fd, src_name, source, moved_to=destination)
                replaced = lstat_at(dst_fd, dst_name)
                if replaced is not None and not replace:
                    raise AlreadyExists(f"{display(destination)}: already exists")
                # renameat moves the entry itself: a link moves as a link and is never resolved
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            if replaced is not None and stat.S_ISREG(replaced.st_mode) and replaced.st_nlink == 1:
                budget.release(replaced.st_size)

        await self.write_op("rename", move, paths=(display(source), display(destination)))

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links cannot be made over SFTP")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links cannot be made over SFTP")

    # -- end -----------------------------------------------------------------------------------------
    async def exit(self) -> None:
        """The session ended (client, revocation, deletion or shutdown): close what it holds."""
        if self.closed:
            return
        self.closed = True
        files, self.files = list(self.files), set()
        for handle in files:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(self.box.__exit__)
        self.owner.session_ended(self)
