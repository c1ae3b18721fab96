"""Walking and deleting directory trees a tenant controls, at any depth, with bounded fds and memory.

A container can build 20,000 nested directories in a second. A walk that keeps one descriptor per level
runs out of descriptors (EMFILE), and one that keeps each node's full path uses memory quadratic in the
depth. Here the directories from the top down to the current one sit on one `DirStack`: a name and the
expected (st_dev, st_ino) per level, with only the deepest `KEEP_FDS` descriptors open. Climbing back to
a level whose descriptor was closed reopens it with `openat(child, "..")` and checks it is the directory
we came from; a tree swapped meanwhile stops the walk with a Conflict instead of letting it wander. No
symbolic link is ever followed: directories are opened with O_NOFOLLOW, entries are lstat'ed.

Memory is O(depth) in a few machine words per level, plus the names of the subdirectories still to visit
on the current path. Full paths are only built when someone asks (`Node.parts`).
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Callable, Iterator
from typing import Literal

from lightd.errors import Conflict, TreeTooDeep
from lightd.volumes.sandbox import DIR_FLAGS, entries_at, lstat_at, unlink_quietly

KEEP_FDS = 32
"""Directory descriptors a walk keeps open below its top; the rest are reopened through '..'."""
MAX_RESCANS = 16
"""How often a deletion rescans one directory a container keeps refilling before it gives up (409)."""

ENTER, LEAVE, LEAF = "enter", "leave", "leaf"


class DirStack:
    """The directories from a walk's top down to the current one, with only the deepest fds open."""

    def __init__(self, top_fd: int, keep: int = KEEP_FDS) -> None:
        fd = os.dup(top_fd)
        st = os.fstat(fd)
        self.keep = keep
        self.names: list[str] = []  # names[i] is the directory at depth i + 1
        self._fds = [fd]  # -1 where closed; index 0 (the top) is never closed
        self._devs = array("Q", [st.st_dev])
        self._inos = array("Q", [st.st_ino])

    @property
    def depth(self) -> int:
        return len(self.names)

    @property
    def fd(self) -> int:
        """The current (deepest) directory; always open."""
        return self._fds[-1]

    def push(self, name: str) -> os.stat_result:
        """Enter the subdirectory `name` of the current directory (OSError as from openat, e.g. ELOOP)."""
        child = os.open(name, DIR_FLAGS, dir_fd=self.fd)  # SECURITY: O_NOFOLLOW, a link is never entered
        try:
            st = os.fstat(child)
            self._devs.append(st.st_dev)
            self._inos.append(st.st_ino)
        except BaseException:
            os.close(child)
            raise
        self._fds.append(child)
        self.names.append(name)
        # SECURITY: EMFILE by depth — only the deepest `keep` levels hold a descriptor.
        shallow = len(self._fds) - 1 - self.keep
        if shallow >= 1 and self._fds[shallow] >= 0:
            os.close(self._fds[shallow])
            self._fds[shallow] = -1
        return st

    def pop(self) -> str:
        """Climb back to the parent (reopened through '..' if its fd was closed); returns the name left."""
        level = len(self._fds) - 1
        if self._fds[level - 1] < 0:
            parent = os.open("..", DIR_FLAGS, dir_fd=self._fds[level])
            st = os.fstat(parent)
            if (st.st_dev, st.st_ino) != (self._devs[level - 1], self._inos[level - 1]):
                # SECURITY: the tree was moved under us; '..' now leads somewhere we never walked into.
                os.close(parent)
                raise Conflict("a folder was moved while lightd was walking the tree; try again")
            self._fds[level - 1] = parent
        os.close(self._fds.pop())
        self._devs.pop()
        self._inos.pop()
        return self.names.pop()

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = []


class Node:
    """One entry met by a `TreeWalk`; `parent_fd` and `parts` are only valid during that step."""

    __slots__ = ("name", "st", "parent_fd", "depth", "_walk")

    def __init__(self, name: str, st: os.stat_result, parent_fd: int, depth: int, walk: "TreeWalk") -> None:
        self.name = name
        self.st = st
        self.parent_fd = parent_fd
        self.depth = depth  # 1 for an entry directly in the walk's top
        self._walk = walk

    @property
    def parts(self) -> tuple[str, ...]:
        """Path components from the walk's top, built on demand from the shared name stack."""
        return tuple(self._walk.names[: self.depth - 1]) + (self.name,)


class TreeWalk:
    """An iterative walk of the directory open at `top_fd`, links never followed, fds and memory bounded.

    Iterating yields (ENTER, dir) once a directory is open (`walk.fd` is then that directory), (LEAF, entry)
    for everything that is not a directory (files, links, FIFOs...), and (LEAVE, dir) after a directory's
    contents. Entries vanishing meanwhile are skipped. Directories deeper than `max_depth` below the top
    raise TreeTooDeep (`too_deep="raise"`) or are yielded as ENTER/LEAVE without their contents and noted
    in `partial` (`too_deep="skip"`). Order is the directory order of the file system, not sorted.
    """

    def __init__(self, top_fd: int, *, max_depth: int | None = None,
                 too_deep: Literal["raise", "skip"] = "raise", where: str = "",
                 prune: Callable[[str], bool] | None = None) -> None:
        self.top_fd = top_fd
        self.prune = prune  # directories whose name it accepts are neither entered nor yielded
        self.max_depth = max_depth
        self.too_deep = too_deep
        self.where = where or "/"
        self.partial: str | None = None
        self._dirs: DirStack | None = None

    @property
    def names(self) -> list[str]:
        return self._dirs.names if self._dirs is not None else []

    @property
    def fd(self) -> int:
        """The directory the walk is in (the one just entered, during ENTER)."""
        assert self._dirs is not None
        return self._dirs.fd

    def __iter__(self) -> Iterator[tuple[str, Node]]:
        dirs = self._dirs = DirStack(self.top_fd)
        try:
            pending: list[list[str]] = [[]]  # per level: subdirectories still to visit
            yield from self._scan(dirs, pending[-1])
            while True:
                todo = pending[-1]
                if not todo:
                    if dirs.depth == 0:
                        return
                    pending.pop()
                    st = os.fstat(dirs.fd)
                    depth = dirs.depth
                    name = dirs.pop()
                    yield LEAVE, Node(name, st, dirs.fd, depth, self)
                    continue
                name = todo.pop()
                parent_fd = dirs.fd
                try:
                    st = dirs.push(name)
                except FileNotFoundError:
                    continue
                except PermissionError:
                    if self.too_deep == "raise":
                        raise
                    # lightd not running as root, and a folder the container closed (mode 000)
                    self.partial = "some folders could not be read"
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    # swapped for a file or a link since the listing: report it as what it is now
                    now = lstat_at(parent_fd, name)
                    if now is not None:
                        yield LEAF, Node(name, now, parent_fd, dirs.depth + 1, self)
                    continue
                pending.append([])
                too_deep = self.max_depth is not None and dirs.depth > self.max_depth
                if too_deep and self.too_deep == "raise":
                    raise TreeTooDeep(f"{self.where}: holds folders more than {self.max_depth} levels deep "
                                      "(volumes.max_depth)")
                yield ENTER, Node(name, st, parent_fd, dirs.depth, self)
                if too_deep:
                    self.partial = f"folders more than {self.max_depth} levels deep were not walked"
                    continue  # its contents are left out; its LEAVE follows
                yield from self._scan(dirs, pending[-1])
        finally:
            self._dirs = None
            dirs.close()

    def _scan(self, dirs: DirStack, todo: list[str]) -> Iterator[tuple[str, Node]]:
        # Streamed, not listed up front: a directory of a million files costs no memory, only its
        # subdirectories' names are kept until visited.
        for name, st in entries_at(dirs.fd):
            if stat.S_ISDIR(st.st_mode):
                if self.prune is None or not self.prune(name):
                    todo.append(name)
            else:
                yield LEAF, Node(name, st, dirs.fd, dirs.depth + 1, self)
        todo.reverse()  # visited in directory order


# -- deletion ---------------------------------------------------------------------------------------
def remove_tree(parent_fd: int, name: str, where: str) -> int:
    """Delete the directory `name` in `parent_fd` and everything below it, at any depth; returns the bytes
    of regular files removed (apparent sizes, for the disk quota)."""
    freed = 0
    for _ in range(MAX_RESCANS):
        try:
            top = os.open(name, DIR_FLAGS, dir_fd=parent_fd)  # SECURITY: a link is removed, never entered
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                os.unlink(name, dir_fd=parent_fd)  # swapped for a file or link: remove that entry
                return freed
            raise
        try:
            freed += empty_tree(top, where)
        finally:
            os.close(top)
        try:
            os.rmdir(name, dir_fd=parent_fd)
            return freed
        except FileNotFoundError:
            return freed
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise Conflict(f"{where}: its contents keep changing while it is deleted; stop the server and try again")


def empty_tree(top_fd: int, where: str) -> int:
    """Delete everything inside the directory open at `top_fd` (not the directory itself); returns bytes."""
    dirs = DirStack(top_fd)
    # Per level: subdirectories left to descend into (None: scan the directory again), and rescans made.
    pending: list[list[str] | None] = [None]
    rescans = [0]
    freed = 0
    try:
        while True:
            todo = pending[-1]
            if todo is None:
                if rescans[-1] > MAX_RESCANS:
                    raise Conflict(f"{where}: its contents keep changing while it is deleted; "
                                   "stop the server and try again")
                todo, size = _clear_level(dirs.fd)
                freed += size
                pending[-1] = todo
            if todo:
                child = todo.pop()
                try:
                    dirs.push(child)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    unlink_quietly(dirs.fd, child)  # became a file or a link: remove the entry itself
                    continue
                pending.append(None)
                rescans.append(0)
                continue
            if dirs.depth == 0:
                return freed
            child = dirs.pop()
            pending.pop()
            rescans.pop()
            try:
                os.rmdir(child, dir_fd=dirs.fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                pending[-1] = None  # refilled meanwhile: scan this level again (bounded by MAX_RESCANS)
                rescans[-1] += 1
    finally:
        dirs.close()


def _clear_level(fd: int) -> tuple[list[str], int]:
    """Unlink every non-directory and rmdir every empty subdirectory of `fd` in one pass; returns the
    subdirectories that were not empty (to descend into) and the bytes freed. Only those need a visit, so
    a wide directory is scanned once, not once per subdirectory."""
    full: list[str] = []
    freed = 0
    for name, st in entries_at(fd):
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)  # SECURITY: unlinkat removes a link, never its target
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    freed += st.st_size
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                full.append(name)
            elif exc.errno == errno.ENOTDIR:
                unlink_quietly(fd, name)
            elif exc.errno == errno.EISDIR:
                full.append(name)  # became a directory since the scan
            else:
                raise
    full.reverse()
    return full, freed
