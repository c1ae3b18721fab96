"""Archives inside a volume: compress paths into zip / tar / tar.gz / tar.bz2, and extract an archive.

Extraction writes only regular files and directories, each through the sandbox; zip-slip (`..`),
absolute, link, device and FIFO entries are skipped and reported, and so are entries nested deeper than
`volumes.max_depth`. Entry count, header sizes and declared sizes are checked before anything is written
(`readers.py`), actual bytes while writing; over a limit the extraction stops with ArchiveRejected (or
DiskQuotaExceeded) and removes everything it wrote. Files are staged as temp files beside their targets
and renamed into place only once the whole archive has been read, so a stopped extraction leaves nothing.
Compression counts the archive's real bytes against the disk limit as they are written.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from lightd.config import VolumeLimits
from lightd.errors import AlreadyExists, ArchiveRejected, DiskQuotaExceeded, LightdError, NotFound, PathNotAllowed
from lightd.volumes.denylist import DENIED
from lightd.volumes.files import SAFE_MODE_BITS, kind_of
from lightd.volumes.quota import WriteBudget
from lightd.volumes.readers import DAMAGED as _DAMAGED
from lightd.volumes.readers import Member, read_archive
from lightd.volumes.sandbox import (
    COPY_CHUNK, Sandbox, Skips, adopt_owner, create_temp, display, lstat_at, open_child_dir, open_regular,
    os_error, split_path, unlink_quietly,
)
from lightd.volumes.walk import ENTER, LEAF, TreeWalk

FORMATS: dict[str, str] = {"zip": "zip", "tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2"}


class _MeteredOutput(io.RawIOBase):
    """The archive file being written; every byte past the furthest written so far is reserved against the
    disk limit before it is written (zip seeks back to patch headers: those bytes are not new)."""

    def __init__(self, out: BinaryIO, budget: WriteBudget) -> None:
        self.out = out
        self.budget = budget
        self.furthest = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        end = self.out.tell() + len(data)
        if end > self.furthest:
            self.budget.reserve(end - self.furthest)  # SECURITY: a sparse file must not fill the disk
            self.furthest = end
        return self.out.write(data)

    def tell(self) -> int:
        return self.out.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.out.seek(offset, whence)

    def flush(self) -> None:
        self.out.flush()


# -- compress -------------------------------------------------------------------------------------
class ArchiveWriter:
    """One archive being written: directories and regular files, streamed from open descriptors."""

    def __init__(self, out: BinaryIO, fmt: str, compresslevel: int = 9) -> None:
        self.zip = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) if fmt == "zip" else None
        level = {"compresslevel": compresslevel} if fmt in ("tar.gz", "tar.bz2") else {}
        self.tar = None if self.zip else tarfile.open(fileobj=out, mode=FORMATS[fmt], **level)  # type: ignore[call-overload]

    def add_dir(self, arcname: str, st: os.stat_result) -> None:
        if self.zip is not None:
            info = zipfile.ZipInfo(arcname + "/", _zip_time(st.st_mtime))
            info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
            self.zip.writestr(info, b"")
        else:
            info = tarfile.TarInfo(arcname)
            info.type, info.mtime = tarfile.DIRTYPE, int(st.st_mtime)
            info.mode = stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS
            self.tar.addfile(info)
            self.tar.members.clear()  # tarfile keeps every header it wrote: unbounded for a big tree

    def add_file(self, arcname: str, src: BinaryIO, st: os.stat_result) -> None:
        if self.zip is not None:
            info = zipfile.ZipInfo(arcname, _zip_time(st.st_mtime))
            info.external_attr = (stat.S_IFREG | (stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size = st.st_size
            with self.zip.open(info, "w", force_zip64=st.st_size > 0x7FFFFFFF) as dst:
                left = st.st_size
                while left > 0:  # capped at the stat size: a file growing meanwhile cannot run forever
                    chunk = src.read(min(COPY_CHUNK, left))
                    if not chunk:
                        break
                    dst.write(chunk)
                    left -= len(chunk)
        else:
            info = tarfile.TarInfo(arcname)
            info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode) & SAFE_MODE_BITS, int(st.st_mtime)
            self.tar.addfile(info, src)  # reads exactly info.size bytes
            self.tar.members.clear()

    def close(self) -> None:
        (self.zip or self.tar).close()


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    return time.gmtime(max(mtime, 315532800))[:6]  # zip cannot store dates before 1980


def default_archive_name(paths: list[str], fmt: str) -> str:
    """`<path>.<ext>` for one path, else `archive-<UTC time>.<ext>` in the volume root."""
    parts = [split_path(p) for p in paths]
    if len(parts) == 1 and parts[0]:
        return display(parts[0]) + "." + fmt
    return f"archive-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{fmt}"


def compress(box: Sandbox, paths: list[str], fmt: str, destination: str, limits: VolumeLimits,
             budget: WriteBudget | None = None) -> dict[str, Any]:
    """Write an archive of `paths` at `destination`; links and special files are skipped, never followed."""
    if fmt not in FORMATS:
        raise ArchiveRejected(f"format: must be one of {', '.join(FORMATS)}")
    budget = budget or WriteBudget()
    sources = [split_path(p) for p in paths]
    for parts in sources:
        box.lstat(display(parts) if parts else "")  # 404 / 400 before anything is created
    skips, counts = Skips(), {"files": 0, "directories": 0}
    with box.parent(destination, create=True) as (dst_fd, dst_name, dst_parts):
        if lstat_at(dst_fd, dst_name) is not None:
            raise AlreadyExists(f"{display(dst_parts)}: already exists")
        out_fd, tmp = create_temp(dst_fd)
        own = os.fstat(out_fd)
        try:
            with os.fdopen(out_fd, "wb") as out:
                writer = ArchiveWriter(_MeteredOutput(out, budget), fmt)  # type: ignore[arg-type]
                try:
                    for parts in sources:
                        add_source(box, parts, writer, (own.st_dev, own.st_ino), skips, counts, limits)
                finally:
                    writer.close()
                os.fchmod(out.fileno(), 0o644)
                adopt_owner(out.fileno(), os.fstat(dst_fd))
            os.rename(tmp, dst_name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
        except BaseException as exc:
            unlink_quietly(dst_fd, tmp)
            if isinstance(exc, OSError):
                raise os_error(exc, display(dst_parts)) from None
            raise
        size = lstat_at(dst_fd, dst_name)
    return {"path": display(dst_parts), "format": fmt, "size": size.st_size if size else 0, **counts,
            "skipped": skips.items, "skipped_count": skips.count}


def add_source(box: Sandbox, parts: tuple[str, ...], writer: ArchiveWriter, own: tuple[int, int], skips: Skips,
                counts: dict[str, int], limits: VolumeLimits) -> None:
    """Add the entry at `parts` (a whole tree for a folder) to `writer`, walked through the sandbox: links and
    special files are skipped into `skips`, never followed; `own` (dev, ino) is left out (the archive itself)."""

    def count(kind: str) -> None:
        counts[kind] += 1
        if counts["files"] + counts["directories"] > limits.archive_max_entries:
            raise ArchiveRejected(f"more than {limits.archive_max_entries} entries to compress")

    def add(parent_fd: int, node_parts: tuple[str, ...], st: os.stat_result) -> None:
        if (st.st_dev, st.st_ino) == own:
            return  # the archive being written
        if stat.S_ISDIR(st.st_mode):
            writer.add_dir(display(node_parts), st)
            count("directories")
        elif stat.S_ISREG(st.st_mode):
            fd, st = open_regular(parent_fd, node_parts[-1], display(node_parts))
            with os.fdopen(fd, "rb") as src:
                writer.add_file(display(node_parts), src, st)
            count("files")
        else:
            # SECURITY: symlink escape — links are not followed into (or stored from) outside the volume
            skips.add(node_parts, f"{kind_of(st.st_mode)} not archived")

    with box.directory(parts[:-1]) as parent_fd:
        if parts:
            st = lstat_at(parent_fd, parts[-1])
            if st is None:
                raise NotFound(f"{display(parts)}: no such file or directory")
            add(parent_fd, parts, st)
            if not stat.S_ISDIR(st.st_mode):
                return
            top = open_child_dir(parent_fd, parts[-1], display(parts))
        else:
            top = os.dup(parent_fd)
        try:
            walk = TreeWalk(top, max_depth=limits.max_depth, where=display(parts))
            walk.prune = box.prune_denied(walk, parts, skips)  # a denied folder is left out whole
            for event, node in walk:
                if event == LEAF and box.denied(parts + node.parts):
                    skips.add(parts + node.parts, DENIED)
                elif event in (ENTER, LEAF):
                    add(node.parent_fd, parts + node.parts, node.st)
        finally:
            os.close(top)


# -- decompress -----------------------------------------------------------------------------------
def _entry_parts(name: str) -> tuple[str, ...] | str:
    """The components of an entry name, or why it is skipped."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "path leaves the destination (zip-slip)"  # SECURITY: zip-slip
    try:
        return split_path(name)
    except PathNotAllowed as exc:
        return exc.message


@dataclass
class _Extraction:
    """Staged output of one extraction: temp files awaiting their rename, and the directories made."""

    box: Sandbox
    dest: tuple[str, ...]
    limits: VolumeLimits
    budget: WriteBudget = field(default_factory=WriteBudget)
    dirs: list[tuple[str, ...]] = field(default_factory=list)
    staged: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)
    written: int = 0
    files: int = 0

    def directory(self, parts: tuple[str, ...]) -> None:
        with self.box.directory(self.dest + parts, create=True, created=self.dirs):
            pass

    def file(self, parts: tuple[str, ...], member: Member) -> None:
        where = self.dest + parts[:-1]
        with self.box.directory(where, create=True, created=self.dirs) as dir_fd:
            fd, tmp = create_temp(dir_fd)
            self.staged.append((where, tmp, parts[-1]))
            with os.fdopen(fd, "wb") as out:
                try:
                    src = member.open()
                except _DAMAGED as exc:
                    raise ArchiveRejected(f"{member.name}: cannot be read: {exc}") from None
                while chunk := self._read(src, member.name):
                    self.written += len(chunk)
                    if self.written > self.limits.archive_max_total_bytes:
                        raise ArchiveRejected(f"archive expands to more than {self.limits.archive_max_total_bytes} bytes")
                    self.budget.reserve(len(chunk))  # actual bytes: the declared sizes may lie
                    out.write(chunk)
                os.fchmod(fd, (member.mode & SAFE_MODE_BITS) or 0o644)  # never setuid/setgid/sticky from an archive
                adopt_owner(fd, os.fstat(dir_fd))
        self.files += 1

    @staticmethod
    def _read(src: IO[bytes], name: str) -> bytes:
        try:
            return src.read(COPY_CHUNK)
        except _DAMAGED as exc:
            raise ArchiveRejected(f"{name}: archive is damaged: {exc}") from None

    def commit(self, skips: Skips) -> None:
        """Rename every staged file into place (a directory in the way is left alone and reported)."""
        for where, tmp, name in self.staged:
            try:
                with self.box.directory(where) as dir_fd:
                    existing = lstat_at(dir_fd, name)
                    if existing is not None and stat.S_ISDIR(existing.st_mode):
                        unlink_quietly(dir_fd, tmp)
                        skips.add(where[len(self.dest):] + (name,), "a directory exists at this path")
                        self.files -= 1
                        continue
                    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces an entry, never follows one
            except (LightdError, OSError) as exc:
                skips.add(where[len(self.dest):] + (name,), getattr(exc, "message", None) or str(exc))
                self.files -= 1

    def roll_back(self) -> None:
        """Remove everything this extraction wrote: staged temp files, then the directories it made."""
        self.budget.rollback()
        for where, tmp, _ in self.staged:
            try:
                with self.box.directory(where) as dir_fd:
                    unlink_quietly(dir_fd, tmp)
            except (LightdError, OSError):
                pass
        for parts in reversed(self.dirs):
            try:
                with self.box.directory(parts[:-1]) as dir_fd:
                    os.rmdir(parts[-1], dir_fd=dir_fd)  # only if empty: never what a container put there
            except (LightdError, OSError):
                pass


def decompress(box: Sandbox, path: str, destination: str | None, limits: VolumeLimits,
               budget: WriteBudget | None = None) -> dict[str, Any]:
    """Extract the archive at `path` into `destination` (default: the archive's own directory)."""
    budget = budget or WriteBudget()
    with box.parent(path) as (dir_fd, name, parts):
        fd, _ = open_regular(dir_fd, name, display(parts))
    dest = split_path(destination) if destination is not None else parts[:-1]
    skips = Skips()
    with os.fdopen(fd, "rb") as archive:
        contents = read_archive(archive, limits)
        budget.check(contents.declared)  # declared sizes first, as Wings does; actual bytes while writing
        job = _Extraction(box, dest, limits, budget)
        box_dirs = 0
        try:
            with box.directory(dest, create=True, created=job.dirs):
                pass
            for member in contents.members:
                entry = _entry_parts(member.name)
                if isinstance(entry, str):
                    skips.add(member.name, entry)
                    continue
                if not entry:
                    continue
                if box.denylist is not None and box.denylist.denies_path(dest + entry):
                    skips.add(member.name, DENIED)  # never made: as Wings, the rest is extracted
                    continue
                if member.kind not in ("file", "directory"):
                    # SECURITY: link/device/FIFO entries could point or open outside the volume
                    skips.add(member.name, f"{member.kind} entries are not extracted")
                    continue
                if len(entry) > limits.max_depth:
                    skips.add(member.name, f"more than {limits.max_depth} levels deep (volumes.max_depth)")
                    continue
                try:
                    if member.kind == "directory":
                        job.directory(entry)
                        box_dirs += 1
                    else:
                        job.file(entry, member)
                except (ArchiveRejected, DiskQuotaExceeded):
                    raise
                except LightdError as exc:  # a link or a file in the way of this entry: skip it alone
                    skips.add(member.name, exc.message)
        except BaseException as exc:
            job.roll_back()
            if isinstance(exc, OSError):
                raise os_error(exc, display(dest)) from None
            raise
    job.commit(skips)
    return {"destination": display(dest), "files": job.files, "directories": box_dirs, "bytes": job.written,
            "skipped": skips.items, "skipped_count": skips.count}
