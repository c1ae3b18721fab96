"""File operations on a volume, built on the sandbox's directory-fd walk: write, mkdir, chmod, list,
delete, rename, copy and disk usage. Synchronous: services call these from a worker thread."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightd.errors import AlreadyExists, BadRequest, Conflict, FileDenied, NotFound, PathNotAllowed
from lightd.volumes.denylist import DENIED
from lightd.volumes.entries import entry_view, kind_of, printable  # noqa: F401 (kind_of, printable: re-exported)
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import (
    COPY_CHUNK, O_PATH, TEMP_PREFIX, Sandbox, Skips, adopt_owner, create_temp, display, entries_at, lstat_at,
    open_child_dir, open_regular, os_error, require_regular, split_path, unlink_quietly,
)
from lightd.volumes.walk import ENTER, LEAF, LEAVE, DirStack, TreeWalk, empty_tree, remove_tree

SAFE_MODE_BITS = 0o777
"""Permission bits the file API stores; SECURITY: never setuid, setgid or sticky (a setuid-root file in a
volume is a root shell for any local account)."""
SEEN_LINKS_MAX = 100_000
"""Hard-linked inodes the usage walk remembers to count once; past that they may be counted per link."""


def write_file(box: Sandbox, path: str, data: bytes, mode: int | None = None,
               budget: WriteBudget | None = None) -> None:
    """Replace or create a regular file atomically: a temp file in the same directory, renamed over."""
    budget = budget or WriteBudget()
    with box.parent(path, create=True) as (dir_fd, name, parts):
        where = display(parts)
        existing = lstat_at(dir_fd, name)
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise PathNotAllowed(f"{where}: is a symbolic link; links are not written through")  # SECURITY
            require_regular(existing, where)
        if mode is None:
            mode = stat.S_IMODE(existing.st_mode) if existing else 0o644
        # Held to what the write adds, as Wings does: a server at its limit can still rewrite its config.
        replaced = existing.st_size if existing is not None and existing.st_nlink == 1 else 0
        budget.reserve(len(data) - replaced)  # DiskQuotaExceeded before a byte is written
        fd, tmp = create_temp(dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fchmod(fd, mode & SAFE_MODE_BITS)  # SECURITY: setuid/setgid/sticky never stored
                adopt_owner(fd, existing or os.fstat(dir_fd))
                os.fsync(fd)
            # SECURITY: symlink escape — renameat replaces the directory entry; a link is never resolved.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            unlink_quietly(dir_fd, tmp)
            if isinstance(exc, OSError):
                raise os_error(exc, where) from None
            raise
        budget.release(replaced - len(data))  # a shorter file freed bytes


def make_dirs(box: Sandbox, path: str) -> bool:
    """Create a directory and its parents; False when it already existed."""
    parts = split_path(path)
    created: list[tuple[str, ...]] = []
    with box.directory(parts, create=True, created=created):
        pass
    return bool(parts) and created[-1:] == [parts]


def chmod(box: Sandbox, path: str, mode: int) -> None:
    """chmod the entry itself (opened with O_NOFOLLOW), never a link target; only the 0o777 bits."""
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
            os.chmod(f"/proc/self/fd/{fd}" if O_PATH else fd, mode & SAFE_MODE_BITS)  # SECURITY: no setuid
        except OSError as exc:
            raise os_error(exc, where) from None
        finally:
            os.close(fd)


def list_dir(box: Sandbox, path: str) -> list[dict[str, Any]]:
    """Entries of a directory (`entries.entry_view`), directories first; links are reported as links, never
    followed."""
    entries = []
    with box.directory(split_path(path)) as fd:
        for name, st in entries_at(fd):
            entries.append(entry_view(name, st))
    entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
    return entries


def remove(box: Sandbox, path: str, budget: WriteBudget | None = None) -> str:
    """Delete a file, a link (the link only) or a directory tree at any depth; returns the kind removed."""
    with box.parent(path) as (dir_fd, name, parts):
        where = display(parts)
        st = lstat_at(dir_fd, name)
        if st is None:
            raise NotFound(f"{where}: no such file or directory")
        check_tree_allowed(box, dir_fd, name, parts)
        freed = remove_at(dir_fd, name, st, where)
    (budget or WriteBudget()).release(freed)
    return kind_of(st.st_mode)


def remove_at(dir_fd: int, name: str, st: os.stat_result, where: str) -> int:
    """Delete `name` in `dir_fd` (lstat `st`): unlink, or empty the tree by fd and rmdir; returns bytes freed."""
    try:
        if stat.S_ISDIR(st.st_mode):
            # SECURITY: recursive delete followed a linked directory, and ran out of fds on a deep tree —
            # remove_tree never enters a link and keeps a bounded number of descriptors at any depth.
            return remove_tree(dir_fd, name, where)
        os.unlink(name, dir_fd=dir_fd)  # SECURITY: unlinkat removes a link, never its target
        return st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0
    except OSError as exc:
        raise os_error(exc, where) from None


def clear(box: Sandbox) -> int:
    """Delete everything inside the volume root, at any depth; returns bytes freed."""
    with box.directory(()) as fd:
        try:
            return empty_tree(fd, "/")
        except OSError as exc:
            raise os_error(exc, "/") from None


def check_tree_allowed(box: Sandbox, dir_fd: int, name: str, parts: tuple[str, ...],
                       moved_to: tuple[str, ...] | None = None) -> None:
    """FileDenied if the folder `name` in `dir_fd` (at `parts`) holds a denied entry, or one that would be
    denied at `moved_to`. SECURITY: denylist bypass — a denied file is not deleted or moved (out from under
    an anchored pattern, then read) with its folder. Walked only when the volume has a denylist."""
    st = lstat_at(dir_fd, name) if box.denylist else None
    if st is None or not stat.S_ISDIR(st.st_mode):
        return
    top = open_child_dir(dir_fd, name, display(parts))
    try:
        for event, node in TreeWalk(top, where=display(parts)):
            if event != LEAVE and any(base is not None and box.denied(base + node.parts) for base in (parts, moved_to)):
                raise FileDenied(f"{display(parts)}: holds {display(parts + node.parts)}, {DENIED}")
    finally:
        os.close(top)


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
                raise AlreadyExists(f"{display(dst_parts)}: already exists")
            check_tree_allowed(box, src_fd, src_name, src_parts, moved_to=dst_parts)
            try:
                # renameat moves the entry itself: a link moves as a link and is never resolved
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            except OSError as exc:
                raise os_error(exc, display(dst_parts)) from None


def copy_file_at(src_dir_fd: int, src_name: str, dst_dir_fd: int, dst_name: str, where: str,
                 budget: WriteBudget | None = None) -> int:
    """Copy one regular file between directory fds via a temp file renamed into place; returns bytes."""
    budget = budget or WriteBudget()
    src_fd, st = open_regular(src_dir_fd, src_name, where)
    try:
        budget.check(st.st_size)  # the size is known: refuse before writing anything
        out_fd, tmp = create_temp(dst_dir_fd)
        try:
            with os.fdopen(out_fd, "wb") as out, os.fdopen(os.dup(src_fd), "rb") as src:
                left, copied = st.st_size, 0
                while left > 0:  # capped at the size seen at open: a growing file cannot run forever
                    chunk = src.read(min(COPY_CHUNK, left))
                    if not chunk:
                        break
                    budget.reserve(len(chunk))  # real bytes: a sparse source is written out in full
                    out.write(chunk)
                    left -= len(chunk)
                    copied += len(chunk)
                os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS)  # no setuid/setgid copies
                adopt_owner(out.fileno(), st)
            os.rename(tmp, dst_name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
        except BaseException:
            unlink_quietly(dst_dir_fd, tmp)
            raise
    finally:
        os.close(src_fd)
    return copied


def copy(box: Sandbox, source: str, destination: str, *, max_depth: int | None = None,
         budget: WriteBudget | None = None) -> dict[str, Any]:
    """Copy a file or directory tree inside the volume; links and special files inside are skipped."""
    src_parts, dst_parts = split_path(source), split_path(destination)
    _refuse_into_itself(src_parts, dst_parts)
    result = {"files": 0, "directories": 0, "bytes": 0}
    skips = Skips()
    budget = budget or WriteBudget()
    with box.parent(source) as (src_fd, src_name, _):
        where = display(src_parts)
        st = lstat_at(src_fd, src_name)
        if st is None:
            raise NotFound(f"{where}: no such file or directory")
        if stat.S_ISLNK(st.st_mode):
            raise PathNotAllowed(f"{where}: is a symbolic link; links are not followed")  # SECURITY
        with box.parent(destination, create=True) as (dst_fd, dst_name, _):
            if lstat_at(dst_fd, dst_name) is not None:
                raise AlreadyExists(f"{display(dst_parts)}: already exists")
            try:
                if stat.S_ISDIR(st.st_mode):
                    def denied(rel: tuple[str, ...]) -> bool:  # left out: denied where it is or where it would go
                        return box.denied(src_parts + rel) or box.denied(dst_parts + rel)
                    _copy_tree(src_fd, src_name, dst_fd, dst_name, src_parts, result, skips, max_depth, budget,
                               denied if box.denylist else None)
                else:
                    result["bytes"] = copy_file_at(src_fd, src_name, dst_fd, dst_name, where, budget)
                    result["files"] = 1
            except OSError as exc:
                raise os_error(exc, where) from None
    return {**result, "skipped": skips.items, "skipped_count": skips.count}


def _copy_tree(src_fd: int, src_name: str, dst_fd: int, dst_name: str, src_parts: tuple[str, ...],
               result: dict[str, int], skips: Skips, max_depth: int | None, budget: WriteBudget,
               denied: Callable[[tuple[str, ...]], bool] | None = None) -> None:
    os.mkdir(dst_name, 0o755, dir_fd=dst_fd)
    try:
        top_src = open_child_dir(src_fd, src_name, display(src_parts))
        try:
            top_dst = open_child_dir(dst_fd, dst_name, dst_name)
            try:
                outs = DirStack(top_dst)  # the destination side, with the same bounded descriptors
            finally:
                os.close(top_dst)
            try:
                result["directories"] += 1
                walk = TreeWalk(top_src, max_depth=max_depth, where=display(src_parts))
                if denied is not None:
                    walk.prune = lambda name: _left_out(denied, tuple(walk.names) + (name,), src_parts, skips)
                for event, node in walk:
                    if event == LEAF and denied is not None and _left_out(denied, node.parts, src_parts, skips):
                        continue
                    if event == ENTER:
                        os.mkdir(node.name, 0o755, dir_fd=outs.fd)
                        outs.push(node.name)
                        result["directories"] += 1
                    elif event == LEAVE:
                        outs.pop()
                    elif stat.S_ISREG(node.st.st_mode):
                        where = display(src_parts + node.parts)
                        result["bytes"] += copy_file_at(node.parent_fd, node.name, outs.fd, node.name, where, budget)
                        result["files"] += 1
                    else:
                        skips.add(src_parts + node.parts, f"{kind_of(node.st.st_mode)} not copied")
            finally:
                outs.close()
        finally:
            os.close(top_src)
    except BaseException:
        # a failed copy leaves no half-made destination behind
        st = lstat_at(dst_fd, dst_name)
        if st is not None:
            remove_at(dst_fd, dst_name, st, dst_name)
        raise


def _left_out(denied: Callable[[tuple[str, ...]], bool], rel: tuple[str, ...], base: tuple[str, ...],
              skips: Skips) -> bool:
    if denied(rel):
        skips.add(base + rel, DENIED)
        return True
    return False


@dataclass
class Usage:
    bytes: int = 0
    files: int = 0
    directories: int = 0
    partial: str | None = None  # why the figure leaves something out, if it does
    _seen: set[tuple[int, int]] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "files": self.files, "directories": self.directories,
                "partial": self.partial is not None, "partial_reason": self.partial}


def usage(box: Sandbox, path: str = "", max_depth: int | None = None) -> Usage:
    """Apparent size of the regular files below `path` (hard links counted once), files and directories.

    Never fails on a hostile tree: folders deeper than `max_depth`, or a tree moved during the walk, give a
    partial figure that says why."""
    total = Usage()
    with box.directory(split_path(path)) as fd:
        walk = TreeWalk(fd, max_depth=max_depth, too_deep="skip")
        try:
            for event, node in walk:
                if event == ENTER:
                    total.directories += 1
                elif event == LEAF and stat.S_ISREG(node.st.st_mode):
                    total.files += 1
                    if node.st.st_nlink > 1:
                        key = (node.st.st_dev, node.st.st_ino)
                        if key in total._seen:
                            continue
                        if len(total._seen) < SEEN_LINKS_MAX:  # bounded memory; past it links may count twice
                            total._seen.add(key)
                    total.bytes += node.st.st_size
        except Conflict as exc:
            total.partial = exc.message
        total.partial = total.partial or walk.partial
    total._seen.clear()
    return total


def chown_tree(box: Sandbox, uid: int, gid: int) -> dict[str, int]:
    """Give the volume root and everything in it to uid:gid, at any depth, never following a link, and
    clear setuid/setgid bits of regular files on the way; returns counts."""
    counts = {"entries": 0, "setid_cleared": 0}
    with box.directory(()) as root:
        os.fchown(root, uid, gid)
        walk = TreeWalk(root)
        for event, node in walk:
            if event == ENTER:
                os.fchown(walk.fd, uid, gid)  # the directory just opened (O_NOFOLLOW), not a name
            elif event == LEAF:
                try:
                    # SECURITY: symlink escape — lchownat changes a link itself, never a host file it names
                    os.chown(node.name, uid, gid, dir_fd=node.parent_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(node.st.st_mode) and node.st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    counts["setid_cleared"] += _clear_setid(node.parent_fd, node.name)
            else:
                continue
            counts["entries"] += 1
    return counts


def _clear_setid(dir_fd: int, name: str) -> int:
    """Drop setuid/setgid from the regular file `name`, opened without following a link; 1 if done."""
    try:
        fd = os.open(name, (O_PATH or os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return 0  # gone, or swapped for a link since the scan (O_NOFOLLOW: ELOOP): nothing to do
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 0
        # SECURITY: setuid root — a volume file must never run with raised rights for a local user.
        os.chmod(f"/proc/self/fd/{fd}" if O_PATH else fd, stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS)
        return 1
    finally:
        os.close(fd)


def clean_temp_files(box: Sandbox, older_than: float, max_depth: int) -> int:
    """Remove lightd's temp files (TEMP_PREFIX regular files) whose ctime is before `older_than`, left by an
    interrupted write or extraction; returns how many. Links and anything else are never touched."""
    removed = 0
    with box.directory(()) as root:
        for event, node in TreeWalk(root, max_depth=max_depth, too_deep="skip"):
            if (event == LEAF and node.name.startswith(TEMP_PREFIX) and stat.S_ISREG(node.st.st_mode)
                    and node.st.st_ctime < older_than):
                try:
                    os.unlink(node.name, dir_fd=node.parent_fd)  # unlinkat: a link put there is removed, not followed
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
