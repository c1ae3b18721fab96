"""File operations on a volume, built on the sandbox's directory-fd walk: write, mkdir, chmod, list,
delete, rename, copy and disk usage. Synchronous: services call these from a worker thread."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lightd.errors import BadRequest, Conflict, NotFound, PathNotAllowed
from lightd.volumes.sandbox import (
    COPY_CHUNK, ENTER, LEAF, LEAVE, O_PATH, Sandbox, Skips, adopt_owner, create_temp, display, lstat_at,
    open_child_dir, open_regular, os_error, require_regular, split_path, unlink_quietly, walk_tree,
)


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def printable(name: str) -> str:
    """A file name as JSON can carry it (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def write_file(box: Sandbox, path: str, data: bytes, mode: int | None = None) -> None:
    """Replace or create a regular file atomically: a temp file in the same directory, renamed over."""
    with box.parent(path, create=True) as (dir_fd, name, parts):
        where = display(parts)
        existing = lstat_at(dir_fd, name)
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise PathNotAllowed(f"{where}: is a symbolic link; links are not written through")  # SECURITY
            require_regular(existing, where)
        if mode is None:
            mode = stat.S_IMODE(existing.st_mode) if existing else 0o644
        fd, tmp = create_temp(dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fchmod(fd, mode)
                adopt_owner(fd, existing or os.fstat(dir_fd))
                os.fsync(fd)
            # SECURITY: symlink escape — renameat replaces the directory entry; a link is never resolved.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            unlink_quietly(dir_fd, tmp)
            if isinstance(exc, OSError):
                raise os_error(exc, where) from None
            raise


def make_dirs(box: Sandbox, path: str) -> bool:
    """Create a directory and its parents; False when it already existed."""
    parts = split_path(path)
    created: list[tuple[str, ...]] = []
    with box.directory(parts, create=True, created=created):
        pass
    return bool(parts) and created[-1:] == [parts]


def chmod(box: Sandbox, path: str, mode: int) -> None:
    """chmod the entry itself (opened with O_NOFOLLOW), never a link target."""
    with box.parent(path) as (dir_fd, name, parts):
        where = display(parts)
        try:
            fd = os.open(name, (O_PATH or os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, where) from None
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise PathNotAllowed(f"{where}: is a symbolic link")  # SECURITY: chmod followed links
            # An O_PATH descriptor cannot be fchmod'ed; its /proc entry names exactly that inode.
            os.chmod(f"/proc/self/fd/{fd}" if O_PATH else fd, mode)
        except OSError as exc:
            raise os_error(exc, where) from None
        finally:
            os.close(fd)


def list_dir(box: Sandbox, path: str) -> list[dict[str, Any]]:
    """Entries of a directory, directories first; links are reported as links, never followed."""
    entries = []
    with box.directory(split_path(path)) as fd:
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append({
                    "name": printable(entry.name),
                    "type": kind_of(st.st_mode),
                    "size": st.st_size,
                    "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                    "modified": iso_time(st.st_mtime),
                })
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
    return entries


def remove(box: Sandbox, path: str) -> str:
    """Delete a file, a link (the link only) or a directory tree; returns the kind removed."""
    with box.parent(path) as (dir_fd, name, parts):
        where = display(parts)
        st = lstat_at(dir_fd, name)
        if st is None:
            raise NotFound(f"{where}: no such file or directory")
        remove_at(dir_fd, name, st, where)
        return kind_of(st.st_mode)


def remove_at(dir_fd: int, name: str, st: os.stat_result, where: str) -> None:
    """Delete `name` in `dir_fd` (lstat `st`): unlink, or empty the tree by fd and rmdir."""
    try:
        if stat.S_ISDIR(st.st_mode):
            # SECURITY: recursive delete followed a linked directory — walk by fd, unlink links as entries.
            top = open_child_dir(dir_fd, name, where)
            try:
                for event, node in walk_tree(top):
                    if event == LEAF:
                        os.unlink(node.name, dir_fd=node.parent_fd)
                    elif event == LEAVE:
                        os.rmdir(node.name, dir_fd=node.parent_fd)
            finally:
                os.close(top)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)  # SECURITY: unlinkat removes a link, never its target
    except OSError as exc:
        raise os_error(exc, where) from None


def clear(box: Sandbox) -> None:
    """Delete everything inside the volume root."""
    with box.directory(()) as fd:
        with os.scandir(fd) as it:
            names = [e.name for e in it]
        for name in names:
            st = lstat_at(fd, name)
            if st is not None:
                remove_at(fd, name, st, name)


def _refuse_into_itself(source: tuple[str, ...], destination: tuple[str, ...]) -> None:
    if destination[: len(source)] == source:
        raise BadRequest("destination: must not be inside the source")


def rename(box: Sandbox, source: str, destination: str) -> None:
    """Move an entry inside the volume; the destination must not exist."""
    src_parts, dst_parts = split_path(source), split_path(destination)
    _refuse_into_itself(src_parts, dst_parts)
    with box.parent(source) as (src_fd, src_name, _):
        if lstat_at(src_fd, src_name) is None:
            raise NotFound(f"{display(src_parts)}: no such file or directory")
        with box.parent(destination, create=True) as (dst_fd, dst_name, _):
            if lstat_at(dst_fd, dst_name) is not None:
                raise Conflict(f"{display(dst_parts)}: already exists")
            try:
                # renameat moves the entry itself: a link moves as a link and is never resolved
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except OSError as exc:
                raise os_error(exc, display(dst_parts)) from None


def copy_file_at(src_dir_fd: int, src_name: str, dst_dir_fd: int, dst_name: str, where: str) -> int:
    """Copy one regular file between directory fds via a temp file renamed into place; returns bytes."""
    src_fd, st = open_regular(src_dir_fd, src_name, where)
    try:
        out_fd, tmp = create_temp(dst_dir_fd)
        try:
            with os.fdopen(out_fd, "wb") as out, os.fdopen(os.dup(src_fd), "rb") as src:
                left, copied = st.st_size, 0
                while left > 0:  # capped at the size seen at open: a growing file cannot run forever
                    chunk = src.read(min(COPY_CHUNK, left))
                    if not chunk:
                        break
                    out.write(chunk)
                    left -= len(chunk)
                    copied += len(chunk)
                os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode) & 0o777)  # no setuid/setgid copies
                adopt_owner(out.fileno(), st)
            os.rename(tmp, dst_name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
        except BaseException:
            unlink_quietly(dst_dir_fd, tmp)
            raise
    finally:
        os.close(src_fd)
    return copied


def copy(box: Sandbox, source: str, destination: str) -> dict[str, Any]:
    """Copy a file or directory tree inside the volume; links and special files inside are skipped."""
    src_parts, dst_parts = split_path(source), split_path(destination)
    _refuse_into_itself(src_parts, dst_parts)
    result = {"files": 0, "directories": 0, "bytes": 0}
    skips = Skips()
    with box.parent(source) as (src_fd, src_name, _):
        where = display(src_parts)
        st = lstat_at(src_fd, src_name)
        if st is None:
            raise NotFound(f"{where}: no such file or directory")
        if stat.S_ISLNK(st.st_mode):
            raise PathNotAllowed(f"{where}: is a symbolic link; links are not followed")  # SECURITY
        with box.parent(destination, create=True) as (dst_fd, dst_name, _):
            _copy_entry(src_fd, src_name, st, dst_fd, dst_name, src_parts, dst_parts, result, skips)
    return {**result, "skipped": skips.items, "skipped_count": skips.count}


def _copy_entry(src_fd: int, src_name: str, st: os.stat_result, dst_fd: int, dst_name: str,
                src_parts: tuple[str, ...], dst_parts: tuple[str, ...], result: dict[str, int], skips: Skips) -> None:
    where = display(src_parts)
    if lstat_at(dst_fd, dst_name) is not None:
        raise Conflict(f"{display(dst_parts)}: already exists")
    try:
        if stat.S_ISDIR(st.st_mode):
            _copy_tree(src_fd, src_name, dst_fd, dst_name, src_parts, result, skips)
        else:
            result["bytes"] = copy_file_at(src_fd, src_name, dst_fd, dst_name, where)
            result["files"] = 1
    except OSError as exc:
        raise os_error(exc, where) from None


def _copy_tree(src_fd: int, src_name: str, dst_fd: int, dst_name: str, src_parts: tuple[str, ...],
               result: dict[str, int], skips: Skips) -> None:
    os.mkdir(dst_name, 0o755, dir_fd=dst_fd)
    try:
        top_src = open_child_dir(src_fd, src_name, display(src_parts))
        outs: list[int] = []
        try:
            outs.append(open_child_dir(dst_fd, dst_name, dst_name))
            result["directories"] += 1
            for event, node in walk_tree(top_src):
                where = display(src_parts + node.parts)
                if event == ENTER:
                    os.mkdir(node.name, 0o755, dir_fd=outs[-1])
                    outs.append(open_child_dir(outs[-1], node.name, where))
                    result["directories"] += 1
                elif event == LEAVE:
                    os.close(outs.pop())
                elif stat.S_ISREG(node.st.st_mode):
                    result["bytes"] += copy_file_at(node.parent_fd, node.name, outs[-1], node.name, where)
                    result["files"] += 1
                else:
                    skips.add(src_parts + node.parts, f"{kind_of(node.st.st_mode)} not copied")
        finally:
            os.close(top_src)
            for fd in outs:
                os.close(fd)
    except BaseException:
        # a failed copy leaves no half-made destination behind
        st = lstat_at(dst_fd, dst_name)
        if st is not None:
            remove_at(dst_fd, dst_name, st, dst_name)
        raise


@dataclass
class Usage:
    bytes: int = 0
    files: int = 0
    directories: int = 0
    _seen: set[tuple[int, int]] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {"bytes": self.bytes, "files": self.files, "directories": self.directories}


def usage(box: Sandbox, path: str = "") -> Usage:
    """Apparent size of the regular files below `path` (hard links counted once), files and directories."""
    total = Usage()
    with box.directory(split_path(path)) as fd:
        for event, node in walk_tree(fd):
            if event == ENTER:
                total.directories += 1
            elif event == LEAF and stat.S_ISREG(node.st.st_mode):
                total.files += 1
                if node.st.st_nlink > 1:
                    key = (node.st.st_dev, node.st.st_ino)
                    if key in total._seen:
                        continue
                    total._seen.add(key)
                total.bytes += node.st.st_size
    return total
