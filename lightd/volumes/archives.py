"""Archives inside a volume: compress paths into zip / tar / tar.gz / tar.bz2, and extract an archive.

Extraction writes only regular files and directories, each through the sandbox; zip-slip (`..`),
absolute, link, device and FIFO entries are skipped and reported. Entry count and declared sizes are
checked before anything is written, actual bytes while writing; over a limit the extraction stops with
ArchiveRejected and removes everything it wrote. Files are staged as temp files beside their targets and
renamed into place only once the whole archive has been read, so a stopped extraction leaves nothing.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from lightd.config import VolumeLimits
from lightd.errors import ArchiveRejected, Conflict, LightdError, NotFound, PathNotAllowed
from lightd.volumes.files import kind_of
from lightd.volumes.sandbox import (
    COPY_CHUNK, ENTER, LEAF, Sandbox, Skips, adopt_owner, create_temp, display, lstat_at, open_child_dir,
    open_regular, os_error, split_path, unlink_quietly, walk_tree,
)

FORMATS: dict[str, str] = {"zip": "zip", "tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2"}
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, RuntimeError)


# -- compress -------------------------------------------------------------------------------------
class _Writer:
    """One archive being written: directories and regular files, streamed from open descriptors."""

    def __init__(self, out: BinaryIO, fmt: str) -> None:
        self.zip = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) if fmt == "zip" else None
        self.tar = None if self.zip else tarfile.open(fileobj=out, mode=FORMATS[fmt])  # type: ignore[call-overload]

    def add_dir(self, arcname: str, st: os.stat_result) -> None:
        if self.zip is not None:
            info = zipfile.ZipInfo(arcname + "/", _zip_time(st.st_mtime))
            info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
            self.zip.writestr(info, b"")
        else:
            info = tarfile.TarInfo(arcname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), int(st.st_mtime)
            self.tar.addfile(info)

    def add_file(self, arcname: str, src: BinaryIO, st: os.stat_result) -> None:
        if self.zip is not None:
            info = zipfile.ZipInfo(arcname, _zip_time(st.st_mtime))
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(st.st_mode)) << 16
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
            info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime)
            self.tar.addfile(info, src)  # reads exactly info.size bytes

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


def compress(box: Sandbox, paths: list[str], fmt: str, destination: str, limits: VolumeLimits) -> dict[str, Any]:
    """Write an archive of `paths` at `destination`; links and special files are skipped, never followed."""
    if fmt not in FORMATS:
        raise ArchiveRejected(f"format: must be one of {', '.join(FORMATS)}")
    sources = [split_path(p) for p in paths]
    for parts in sources:
        box.lstat(display(parts) if parts else "")  # 404 / 400 before anything is created
    skips, counts = Skips(), {"files": 0, "directories": 0}
    with box.parent(destination, create=True) as (dst_fd, dst_name, dst_parts):
        if lstat_at(dst_fd, dst_name) is not None:
            raise Conflict(f"{display(dst_parts)}: already exists")
        out_fd, tmp = create_temp(dst_fd)
        own = os.fstat(out_fd)
        try:
            with os.fdopen(out_fd, "wb") as out:
                writer = _Writer(out, fmt)
                try:
                    for parts in sources:
                        _add_source(box, parts, writer, (own.st_dev, own.st_ino), skips, counts, limits)
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


def _add_source(box: Sandbox, parts: tuple[str, ...], writer: _Writer, own: tuple[int, int], skips: Skips,
                counts: dict[str, int], limits: VolumeLimits) -> None:
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
            for event, node in walk_tree(top):
                if event in (ENTER, LEAF):
                    add(node.parent_fd, parts + node.parts, node.st)
        finally:
            os.close(top)


# -- decompress -----------------------------------------------------------------------------------
@dataclass
class _Member:
    name: str
    kind: str  # file, directory, symlink, hardlink, device, fifo, other
    size: int
    mode: int
    open: Callable[[], IO[bytes]]


def _zip_members(archive: BinaryIO, limits: VolumeLimits) -> list[_Member]:
    try:
        # Checked from the end record before zipfile loads the whole central directory into memory.
        endrec = zipfile._EndRecData(archive)  # noqa: SLF001 (stable since Python 2)
        if endrec and endrec[zipfile._ECD_ENTRIES_TOTAL] > limits.archive_max_entries:
            raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
        archive.seek(0)
        zf = zipfile.ZipFile(archive)
    except _DAMAGED as exc:
        raise ArchiveRejected(f"not a readable zip archive: {exc}") from None
    infos = zf.infolist()
    if len(infos) > limits.archive_max_entries:
        raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
    if sum(i.file_size for i in infos if not i.is_dir()) > limits.archive_max_total_bytes:
        raise ArchiveRejected(f"archive declares more than {limits.archive_max_total_bytes} bytes")
    members = []
    for info in infos:
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if info.is_dir():
            kind = "directory"
        elif info.flag_bits & 0x1:
            kind = "encrypted file"
        elif fmt in (0, stat.S_IFREG):
            kind = "file"
        else:
            kind = {stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}.get(
                fmt, "other")
        members.append(_Member(info.filename, kind, info.file_size, stat.S_IMODE(mode), lambda i=info: zf.open(i)))
    return members


def _tar_members(archive: BinaryIO, limits: VolumeLimits) -> list[_Member]:
    try:
        tf = tarfile.open(fileobj=archive, mode="r:*")
        infos, declared = [], 0
        # Sizes are summed header by header: a bomb is refused before its data is decompressed.
        while (info := tf.next()) is not None:
            infos.append(info)
            if len(infos) > limits.archive_max_entries:
                raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
            declared += info.size if info.isreg() else 0
            if declared > limits.archive_max_total_bytes:
                raise ArchiveRejected(f"archive declares more than {limits.archive_max_total_bytes} bytes")
    except _DAMAGED as exc:
        raise ArchiveRejected(f"not a readable archive: {exc}") from None
    members = []
    for info in infos:
        if info.isreg():
            kind = "file"
        elif info.isdir():
            kind = "directory"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.ischr() or info.isblk():
            kind = "device"
        elif info.isfifo():
            kind = "fifo"
        else:
            kind = "other"
        members.append(_Member(info.name, kind, info.size, info.mode, lambda i=info: tf.extractfile(i)))
    return members


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
    dirs: list[tuple[str, ...]] = field(default_factory=list)
    staged: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)
    written: int = 0
    files: int = 0

    def directory(self, parts: tuple[str, ...]) -> None:
        with self.box.directory(self.dest + parts, create=True, created=self.dirs):
            pass

    def file(self, parts: tuple[str, ...], member: _Member) -> None:
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
                    out.write(chunk)
                os.fchmod(fd, (member.mode & 0o777) or 0o644)  # never setuid/setgid/sticky from an archive
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


def decompress(box: Sandbox, path: str, destination: str | None, limits: VolumeLimits) -> dict[str, Any]:
    """Extract the archive at `path` into `destination` (default: the archive's own directory)."""
    with box.parent(path) as (dir_fd, name, parts):
        fd, _ = open_regular(dir_fd, name, display(parts))
    dest = split_path(destination) if destination is not None else parts[:-1]
    skips = Skips()
    with os.fdopen(fd, "rb") as archive:
        is_zip = archive.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
        archive.seek(0)
        members = _zip_members(archive, limits) if is_zip else _tar_members(archive, limits)
        job = _Extraction(box, dest, limits)
        box_dirs = 0
        try:
            with box.directory(dest, create=True, created=job.dirs):
                pass
            for member in members:
                entry = _entry_parts(member.name)
                if isinstance(entry, str):
                    skips.add(member.name, entry)
                    continue
                if not entry:
                    continue
                if member.kind not in ("file", "directory"):
                    # SECURITY: link/device/FIFO entries could point or open outside the volume
                    skips.add(member.name, f"{member.kind} entries are not extracted")
                    continue
                try:
                    if member.kind == "directory":
                        job.directory(entry)
                        box_dirs += 1
                    else:
                        job.file(entry, member)
                except ArchiveRejected:
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
