"""Directory-relative file operations confined to one volume directory.

Every operation starts from a file descriptor of the volume root and walks each path component with
`openat(O_DIRECTORY | O_NOFOLLOW)`, so no symbolic link is ever followed — not in a middle component, not
in the last one — and nothing is decided on path strings that a container could change underneath us
(the check-then-use race of Wings' advisories). Final components are touched with `dir_fd=` and
`follow_symlinks=False` / `O_NOFOLLOW`. The code is synchronous: services call it from a worker thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lightd.errors import AlreadyExists, BadRequest, Conflict, Forbidden, LightdError, NotFound, PathNotAllowed
from lightd.volumes.denylist import DENIED, Denylist

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
TEMP_PREFIX = ".lightd-tmp-"
COPY_CHUNK = 1024 * 1024
SKIPS_REPORTED = 100
SKIP_NAME_CHARS = 1024

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_PATH = getattr(os, "O_PATH", 0)


def split_path(path: str) -> tuple[str, ...]:
    """Validate a client path and return its components; `""`, `"."` and `"/"`-free roots mean the volume root."""
    if not isinstance(path, str):
        raise PathNotAllowed("path: must be a string")
    if "\x00" in path:
        raise PathNotAllowed("path: must not contain NUL bytes")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathNotAllowed(f"path: longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise PathNotAllowed(f"path: must be relative to the volume, not absolute: {path!r}")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    for part in parts:
        if part == "..":
            raise PathNotAllowed(f"path: must not contain '..': {path!r}")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise PathNotAllowed(f"path: a component is longer than {MAX_NAME_BYTES} bytes")
    return parts


def display(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "/"


def os_error(exc: OSError, where: str) -> LightdError:
    """Translate an OSError from a volume operation into the error tree."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound(f"{where}: no such file or directory")
    if code in (errno.EEXIST, errno.ENOTEMPTY):
        return AlreadyExists(f"{where}: already exists") if code == errno.EEXIST else Conflict(f"{where}: directory not empty")
    if code == errno.ELOOP:
        return PathNotAllowed(f"{where}: is a symbolic link")
    if code == errno.ENOTDIR:
        return BadRequest(f"{where}: not a directory")
    if code == errno.EISDIR:
        return BadRequest(f"{where}: is a directory")
    if code in (errno.EACCES, errno.EPERM):
        return Forbidden(f"{where}: permission denied")
    if code == errno.ENAMETOOLONG:
        return PathNotAllowed(f"{where}: name too long")
    if code == errno.EINVAL:
        return BadRequest(f"{where}: invalid operation")
    return LightdError(f"{where}: {exc.strerror or exc}")


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` in `dir_fd`, or None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_child_dir(parent_fd: int, name: str, where: str) -> int:
    """Open the directory `name` below `parent_fd`; a symbolic link there is refused, never followed."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)  # SECURITY: symlink escape (O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            st = lstat_at(parent_fd, name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise PathNotAllowed(f"{where}: is a symbolic link; links are not followed") from None
        raise os_error(exc, where) from None


def open_regular(dir_fd: int, name: str, where: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
    """Open a regular file (for reading unless `flags` say otherwise, e.g. O_RDWR); links, FIFOs, sockets and
    devices are refused."""
    if O_PATH:
        # SECURITY: FIFO/device open. O_PATH opens nothing (no device open side effect, no FIFO hang);
        # the type is checked on that descriptor, then the same inode is reopened through /proc.
        try:
            path_fd = os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, where) from None
        try:
            st = os.fstat(path_fd)
            require_regular(st, where)
            try:
                fd = os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC)
            except FileNotFoundError:  # no /proc: fall through to the plain no-follow open below
                fd = -1
        finally:
            os.close(path_fd)
        if fd >= 0:
            return fd, _checked_fstat(fd, where)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise os_error(exc, where) from None
    return fd, _checked_fstat(fd, where)


def _checked_fstat(fd: int, where: str) -> os.stat_result:
    st = os.fstat(fd)
    try:
        require_regular(st, where)
    except LightdError:
        os.close(fd)
        raise
    return st


def require_regular(st: os.stat_result, where: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise PathNotAllowed(f"{where}: is a symbolic link; links are not followed")
    if stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"{where}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise BadRequest(f"{where}: not a regular file")  # SECURITY: never read FIFOs or devices


def adopt_owner(fd: int, like: os.stat_result) -> None:
    """Running as root, give a new file the owner of `like` so container users keep access."""
    if os.geteuid() == 0 and (like.st_uid, like.st_gid) != (0, 0):
        os.fchown(fd, like.st_uid, like.st_gid)


def create_temp(dir_fd: int) -> tuple[int, str]:
    """A new empty file with a random name in `dir_fd`, opened for writing."""
    name = TEMP_PREFIX + secrets.token_hex(8)
    # SECURITY: O_EXCL | O_NOFOLLOW — never open something a container planted under the name.
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    return fd, name


def entries_at(fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the directory open at `fd`, streamed in directory order; an entry
    that vanishes meanwhile is skipped."""
    with os.scandir(fd) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield entry.name, st


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


@dataclass
class Skips:
    """Entries an operation left out on purpose, with why; the report keeps the first SKIPS_REPORTED."""

    count: int = 0
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, parts: tuple[str, ...] | str, reason: str) -> None:
        self.count += 1
        if len(self.items) < SKIPS_REPORTED:
            name = parts if isinstance(parts, str) else display(parts)
            if len(name) > SKIP_NAME_CHARS:  # an archive's entry names can be a megabyte long
                name = name[:SKIP_NAME_CHARS] + "…"
            self.items.append({"path": name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                               "reason": reason})


class Sandbox:
    """File operations inside one volume root, by directory fd; use as `with Sandbox(root) as box:`.

    With a `denylist` (a tenant's sandbox: file API, SFTP) every path it walks to is checked against it
    (FileDenied); without one (lightd's own work: config edits, usage, chown, backups) nothing is denied."""

    def __init__(self, root: Path, denylist: Denylist | None = None) -> None:
        self.root = root
        self.denylist = denylist
        self._fd = -1

    def __enter__(self) -> "Sandbox":
        self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self._fd)
        self._fd = -1

    # -- the file denylist ---------------------------------------------------------------------------
    def denied(self, parts: tuple[str, ...]) -> bool:
        """Whether the entry at `parts` itself is denied (for walks, which checked its folders already)."""
        return self.denylist is not None and self.denylist.denies(parts)

    def check_allowed(self, parts: tuple[str, ...]) -> None:
        """FileDenied for a denied path: the entry or a folder on the way to it."""
        if self.denylist is not None:
            self.denylist.check(parts)

    def prune_denied(self, walk: Any, base: tuple[str, ...], skips: Skips | None = None,
                     also: Callable[[str], bool] | None = None) -> Callable[[str], bool] | None:
        """A TreeWalk `prune` (its top at `base`) leaving out denied folders (noted in `skips`) and those
        `also` names; None when there is nothing to prune."""
        if not self.denylist and also is None:
            return None

        def prune(name: str) -> bool:
            if also is not None and also(name):
                return True
            if not self.denylist:
                return False
            parts = base + tuple(walk.names) + (name,)
            if self.denied(parts):
                if skips is not None:
                    skips.add(parts, DENIED)
                return True
            return False
        return prune

    # -- walking -------------------------------------------------------------------------------------
    @contextmanager
    def directory(self, parts: tuple[str, ...], *, create: bool = False,
                  created: list[tuple[str, ...]] | None = None) -> Iterator[int]:
        """A fd of the directory at `parts` (made, with parents, when `create`); closed on exit."""
        self.check_allowed(parts)
        fd = os.dup(self._fd)
        try:
            for i, name in enumerate(parts):
                here = parts[: i + 1]
                if create:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)  # mkdirat never follows a link in the last component
                        made = True
                    except FileExistsError:
                        made = False
                    except OSError as exc:
                        raise os_error(exc, display(here)) from None
                child = open_child_dir(fd, name, display(here))
                if create and made:
                    adopt_owner(child, os.fstat(fd))
                    if created is not None:
                        created.append(here)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str, tuple[str, ...]]]:
        """(fd of the parent directory, final name, all components) for a path naming an entry."""
        parts = split_path(path)
        if not parts:
            raise PathNotAllowed("path: must name an entry inside the volume, not the volume root")
        if self.denylist is not None:
            self.denylist.check(parts, folders=False)  # its folders: by `directory`
        with self.directory(parts[:-1], create=create) as fd:
            yield fd, parts[-1], parts

    # -- single entries ------------------------------------------------------------------------------
    def lstat(self, path: str) -> os.stat_result:
        """lstat of an entry (the root's own stat for the root); 404 when missing."""
        parts = split_path(path)
        if not parts:
            return os.fstat(self._fd)
        with self.parent(path) as (fd, name, parts):
            st = lstat_at(fd, name)
        if st is None:
            raise NotFound(f"{display(parts)}: no such file or directory")
        return st

    def open_file(self, path: str) -> tuple[BinaryIO, int]:
        """An open regular file (read-only, unbuffered) and its size at open time."""
        with self.parent(path) as (dir_fd, name, parts):
            fd, st = open_regular(dir_fd, name, display(parts))
        return os.fdopen(fd, "rb", buffering=0), st.st_size
