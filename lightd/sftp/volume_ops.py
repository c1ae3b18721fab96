"""The synchronous side of an SFTP session (run in worker threads): client paths made volume paths, links
followed only inside the volume, open files served by descriptor and held to the disk limit, setstat.
Everything walks the volume with the sandbox's directory-fd calls (lightd.volumes.sandbox)."""

from __future__ import annotations

import os
import posixpath
import stat

import asyncssh
from asyncssh import SFTPAttrs

from lightd.errors import AlreadyExists, DiskQuotaExceeded, Forbidden, NotFound, PathNotAllowed
from lightd.volumes.files import chmod
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import (
    Sandbox, adopt_owner, display, lstat_at, open_child_dir, open_regular, require_regular, split_path,
    unlink_quietly,
)

MAX_LINK_HOPS = 8
MAX_READ = 256 * 1024
WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


def volume_parts(path: bytes) -> tuple[str, ...]:
    """The components of a client path inside the volume: absolute or relative to "/", `..` resolved
    lexically and never above the root (SECURITY: traversal), then checked like the HTTP API's paths."""
    text = os.fsdecode(path)
    return split_path(posixpath.normpath(posixpath.join("/", text)).lstrip("/"))


def lstat_parts(box: Sandbox, parts: tuple[str, ...]) -> os.stat_result:
    return box.lstat(display(parts) if parts else "")


def follow(box: Sandbox, parts: tuple[str, ...]) -> tuple[tuple[str, ...], os.stat_result]:
    """`parts` with a final link resolved inside the volume (a link target is read as a volume path, "/"
    its root), and the stat of what it names; a chain longer than MAX_LINK_HOPS is refused."""
    for _ in range(MAX_LINK_HOPS):
        st = lstat_parts(box, parts)
        if not stat.S_ISLNK(st.st_mode):
            return parts, st
        with box.parent(display(parts)) as (dir_fd, name, _):
            target = os.readlink(name, dir_fd=dir_fd)
        parent = "/" + "/".join(parts[:-1])
        parts = volume_parts(os.fsencode(posixpath.join(parent, target)))  # SECURITY: stays in the volume
    raise PathNotAllowed(f"{display(parts)}: too many levels of symbolic links")


class OpenFile:
    """An open regular file of the volume (its descriptor, not its name, serves reads and writes)."""

    def __init__(self, fd: int, dir_fd: int, name: str, path: str, *, created: bool, writable: bool,
                 budget: WriteBudget, append: bool = False) -> None:
        self.fd = fd
        self.dir_fd = dir_fd
        self.name = name
        self.path = path
        self.created = created
        self.writable = writable
        self.append = append  # FXF_APPEND: every write goes to the end, whatever its offset
        self.budget = budget
        st = os.fstat(fd)
        self.ino = (st.st_dev, st.st_ino)
        self.size_at_open = self.size = st.st_size
        self.wrote = False
        self.quota_hit = False

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, min(size, MAX_READ), offset)

    def write(self, offset: int, data: bytes) -> int:
        if self.quota_hit:
            raise DiskQuotaExceeded(f"{self.path}: an earlier write passed the disk limit; upload abandoned")
        if self.append:
            offset = self.size
        end = offset + len(data)
        try:
            self.budget.reserve(end - self.size)  # apparent growth, before a byte is written
        except DiskQuotaExceeded:
            self.quota_hit = True
            self.put_back()
            raise
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        self.size = max(self.size, end)
        self.wrote = True
        return len(data)

    def truncate(self, size: int) -> None:
        self.budget.reserve(size - self.size)
        os.ftruncate(self.fd, size)
        self.budget.release(self.size - size)
        self.size, self.wrote = size, True

    def put_back(self) -> None:
        """Undo this handle's writes: remove a file it created, cut one it grew back to its size at open."""
        os.ftruncate(self.fd, self.size_at_open)
        self.budget.rollback()
        self.size = self.size_at_open
        st = lstat_at(self.dir_fd, self.name)
        if self.created and st is not None and (st.st_dev, st.st_ino) == self.ino:
            unlink_quietly(self.dir_fd, self.name)

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's sparse-range queries (SEEK_DATA / SEEK_HOLE) on the descriptor."""
        return os.lseek(self.fd, offset, whence)

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1


def open_file(box: Sandbox, parts: tuple[str, ...], pflags: int, budget: WriteBudget) -> OpenFile:
    """Open (or create) the regular file at `parts` for the SFTP open flags `pflags`."""
    writable = bool(pflags & WRITE_FLAGS)
    access = (os.O_RDWR if pflags & asyncssh.FXF_READ else os.O_WRONLY) if writable else os.O_RDONLY
    if not writable:
        parts, _ = follow(box, parts)
    with box.parent(display(parts)) as (dir_fd, name, _):
        where = display(parts)
        created = False
        existing = lstat_at(dir_fd, name)
        if existing is None:
            if not pflags & asyncssh.FXF_CREAT:
                raise NotFound(f"{where}: no such file")
            # SECURITY: O_EXCL | O_NOFOLLOW — never open something planted under the name meanwhile.
            fd = os.open(name, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
            adopt_owner(fd, os.fstat(dir_fd))
            created = True
        elif pflags & asyncssh.FXF_EXCL:
            raise AlreadyExists(f"{where}: already exists")
        else:
            if stat.S_ISLNK(existing.st_mode) and writable:
                raise PathNotAllowed(f"{where}: is a symbolic link; links are not written through")  # SECURITY
            fd, st = open_regular(dir_fd, name, where, access)  # no link, FIFO or device is ever opened
            existing = st
        handle = OpenFile(fd, os.dup(dir_fd), name, where, created=created, writable=writable, budget=budget,
                          append=bool(pflags & asyncssh.FXF_APPEND))
    if writable and pflags & asyncssh.FXF_TRUNC and not created and handle.size:
        os.ftruncate(fd, 0)
        if existing is not None and existing.st_nlink == 1:
            budget.release(handle.size)
        handle.size_at_open = handle.size = 0
    return handle


def set_attrs(box: Sandbox, parts: tuple[str, ...], attrs: SFTPAttrs, budget: WriteBudget, *, links: bool) -> None:
    """setstat (a final link followed inside the volume) or lsetstat (`links`: the link itself)."""
    if not links:
        parts, _ = follow(box, parts)
    path = display(parts)
    with box.parent(path) as (dir_fd, name, _):
        st = lstat_at(dir_fd, name)
        if st is None:
            raise NotFound(f"{path}: no such file or directory")
        refuse_owner_change(attrs, st)
        if attrs.size is not None:
            require_regular(st, path)
            fd, _ = open_regular(dir_fd, name, path, os.O_WRONLY)
            handle = OpenFile(fd, -1, name, path, created=False, writable=True, budget=budget)
            try:
                handle.truncate(attrs.size)
            finally:
                handle.close()
        if attrs.permissions is not None:
            chmod(box, path, attrs.permissions)  # no-follow, 0o777 bits only
        if attrs.atime is not None or attrs.mtime is not None:
            os.utime(name, ns=times_ns(attrs, st), dir_fd=dir_fd, follow_symlinks=False)


def refuse_owner_change(attrs: SFTPAttrs, st: os.stat_result) -> None:
    if (attrs.uid is not None and attrs.uid != st.st_uid) or (attrs.gid is not None and attrs.gid != st.st_gid):
        raise Forbidden("changing a file's owner or group is not allowed")


def times_ns(attrs: SFTPAttrs, st: os.stat_result) -> tuple[int, int]:
    def ns(seconds: int | None, nanos: int | None, current: int) -> int:
        return current if seconds is None else seconds * 1_000_000_000 + (nanos or 0)

    return ns(attrs.atime, attrs.atime_ns, st.st_atime_ns), ns(attrs.mtime, attrs.mtime_ns, st.st_mtime_ns)



def adopt_owner_of_dir(dir_fd: int, name: str) -> None:
    """A directory just made belongs to the owner of its parent (the server's user when lightd is root)."""
    child = open_child_dir(dir_fd, name, name)
    try:
        adopt_owner(child, os.fstat(dir_fd))
    finally:
        os.close(child)
