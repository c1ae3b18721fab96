"""Reading archives a tenant made, in bounded memory: their members as a stream, every header checked.

Python's tarfile trusts the sizes an archive declares. It reads a pax or GNU long-name header whole into
memory, so a 1 MB .tar.gz whose pax header declares 1 GiB costs 1 GiB of RAM. It parses pax records with a
regex that backtracks, and it reads GNU sparse maps of any length. Its `LZMAFile` also lets an xz stream
choose its own dictionary size, up to 1.5 GiB. Here every header's size is checked before tarfile reads it
(`volumes.archive_max_header_bytes`), pax records are parsed in linear time, sparse members are refused,
xz is decoded under a memory limit, and no member's header is kept once passed. A tar is read twice: once
to check counts and declared sizes before anything is written, and once to extract, so the members are
never all held at once. The zip index is size-checked before zipfile loads it (`archive_max_index_bytes`).
"""

from __future__ import annotations

import _compression  # what LZMAFile itself reads through; the only way to give the decoder a memlimit
import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

from lightd.config import VolumeLimits
from lightd.errors import ArchiveRejected

XZ_MEMLIMIT = 128 * 1024 * 1024
"""Decoder memory an xz archive may ask for (`xz -9` needs 65 MiB)."""
MAX_HEADER_CHAIN = 16
"""Extended headers in a row before one member (pax, GNU long name and long link: 3 in practice)."""
DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, RuntimeError,
           ValueError, IndexError)
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
             tarfile.GNUTYPE_LONGLINK)
_GLOBAL_KEYS = frozenset(tarfile.PAX_FIELDS) | {"hdrcharset"}
_PAX_LENGTH = re.compile(rb"([0-9]{1,20}) ")


@dataclass
class Member:
    name: str
    kind: str  # file, directory, symlink, hardlink, device, fifo, encrypted file, other
    size: int
    mode: int
    open: Callable[[], IO[bytes]]  # valid until the next member is taken from the stream


@dataclass
class Contents:
    """An archive's members, checked: how many, the bytes regular files declare, and the members."""

    count: int
    declared: int
    members: Iterator[Member]


def read_archive(archive: BinaryIO, limits: VolumeLimits) -> Contents:
    """Check an archive's headers against the limits and return its members, streamed."""
    is_zip = archive.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    archive.seek(0)
    return _zip_contents(archive, limits) if is_zip else _tar_contents(archive, limits)


# -- zip --------------------------------------------------------------------------------------------
def _zip_contents(archive: BinaryIO, limits: VolumeLimits) -> Contents:
    try:
        # Checked from the end record before zipfile loads the whole central directory into memory: the
        # entry count does not bound it (names, extra fields and comments are up to 64 KiB each).
        endrec = zipfile._EndRecData(archive)  # noqa: SLF001 (stable since Python 2)
        if endrec and endrec[zipfile._ECD_ENTRIES_TOTAL] > limits.archive_max_entries:
            raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
        if endrec and endrec[zipfile._ECD_SIZE] > limits.archive_max_index_bytes:
            # SECURITY: index bomb — zipfile reads the central directory whole
            raise ArchiveRejected(f"the zip index is larger than {limits.archive_max_index_bytes} bytes")
        archive.seek(0)
        zf = zipfile.ZipFile(archive)
    except DAMAGED as exc:
        raise ArchiveRejected(f"not a readable zip archive: {exc}") from None
    infos = zf.infolist()
    if len(infos) > limits.archive_max_entries:
        raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
    declared = sum(i.file_size for i in infos if not i.is_dir())
    if declared > limits.archive_max_total_bytes:
        raise ArchiveRejected(f"archive declares more than {limits.archive_max_total_bytes} bytes")
    return Contents(len(infos), declared, (_zip_member(zf, info) for info in infos))


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
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
    return Member(info.filename, kind, info.file_size, stat.S_IMODE(mode), lambda: zf.open(info))


# -- tar --------------------------------------------------------------------------------------------
def _tar_contents(archive: BinaryIO, limits: VolumeLimits) -> Contents:
    count = declared = 0
    # Sizes are summed header by header: a bomb is refused before any of its data is written.
    for _, info in _tar_headers(archive, limits):
        count += 1
        declared += info.size if info.isreg() else 0
        if declared > limits.archive_max_total_bytes:
            raise ArchiveRejected(f"archive declares more than {limits.archive_max_total_bytes} bytes")
    # The second pass checks everything again: the archive sits in the volume, a container may rewrite it.
    return Contents(count, declared, (_tar_member(tf, info) for tf, info in _tar_headers(archive, limits)))


def _tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Member:
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
    return Member(info.name, kind, info.size, info.mode, lambda: tf.extractfile(info))  # type: ignore[return-value]


def _tar_headers(archive: BinaryIO, limits: VolumeLimits) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every member header of a tar, read with bounded memory; nothing of a passed member is kept."""
    guarded = type("_Guarded", (_GuardedTarInfo,), {"max_header_bytes": limits.archive_max_header_bytes})
    count = 0
    try:
        tf = _open_tar(archive, guarded)
        while (info := tf.next()) is not None:
            tf.members.clear()  # tarfile keeps every header it read: 100,000 long names add up
            info.pax_headers = {}
            count += 1
            if count > limits.archive_max_entries:
                raise ArchiveRejected(f"archive has more than {limits.archive_max_entries} entries")
            yield tf, info
    except DAMAGED as exc:
        raise ArchiveRejected(f"not a readable archive: {exc}") from None


def _open_tar(archive: BinaryIO, tarinfo: type[tarfile.TarInfo]) -> tarfile.TarFile:
    archive.seek(0)
    magic = archive.read(6)
    archive.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return tarfile.open(fileobj=archive, mode="r:gz", tarinfo=tarinfo)
    if magic.startswith(b"BZh"):
        return tarfile.open(fileobj=archive, mode="r:bz2", tarinfo=tarinfo)
    if magic == b"\xfd7zXZ\x00":
        # SECURITY: an xz stream picks its own dictionary size (up to 1.5 GiB), which the decoder fills as
        # it goes; tarfile's LZMAFile sets no limit. (.lzma "alone" streams, up to 4 GiB, are not read.)
        raw = _compression.DecompressReader(archive, lzma.LZMADecompressor, trailing_error=lzma.LZMAError,
                                            format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
        return tarfile.open(fileobj=io.BufferedReader(raw), mode="r:", tarinfo=tarinfo)
    return tarfile.open(fileobj=archive, mode="r:", tarinfo=tarinfo)


class _GuardedTarInfo(tarfile.TarInfo):
    """A TarInfo that checks extended headers before tarfile reads them (subclassed per limit)."""

    max_header_bytes = 1024 * 1024

    def _proc_member(self, tar: tarfile.TarFile):  # type: ignore[no-untyped-def]
        if self.type in _EXTENDED:
            # SECURITY: header bomb — tarfile reads pax / GNU long-name headers whole into memory, and each
            # one in a chain stays in memory until the member they describe is read.
            chain = getattr(tar, "_lightd_chain", (0, 0))
            chain = (chain[0] + 1, chain[1] + self.size)
            tar._lightd_chain = chain  # type: ignore[attr-defined]
            if self.size > self.max_header_bytes or chain[1] > self.max_header_bytes:
                raise ArchiveRejected(f"{self.name}: an extended tar header of more than {self.max_header_bytes} "
                                      "bytes (volumes.archive_max_header_bytes)")
            if chain[0] > MAX_HEADER_CHAIN:
                raise ArchiveRejected(f"more than {MAX_HEADER_CHAIN} extended headers before one entry")
        else:
            tar._lightd_chain = (0, 0)  # type: ignore[attr-defined]
            if self.type == tarfile.GNUTYPE_SPARSE:
                # SECURITY: tarfile reads a GNU sparse map of any length into memory
                raise ArchiveRejected(f"{self.name}: GNU sparse entries are not supported")
        return super()._proc_member(tar)

    def _proc_pax(self, tar: tarfile.TarFile):  # type: ignore[no-untyped-def]
        """tarfile's pax header processing, with records parsed in linear time (its regex backtracks:
        CVE-2024-6232) and without GNU sparse maps; `_proc_member` has bounded the size."""
        buf = tar.fileobj.read(self._block(self.size))[: self.size]  # type: ignore[union-attr]
        records = _pax_records(buf)
        if self.type == tarfile.XGLTYPE:
            # Global headers apply to every later member and are copied into each: keep the few that matter.
            pax_headers = tar.pax_headers
            records = [(key, value) for key, value in records if key.decode("utf-8", "replace") in _GLOBAL_KEYS]
        else:
            pax_headers = tar.pax_headers.copy()
        for key, value in records:
            if key == b"hdrcharset":
                pax_headers["hdrcharset"] = value.decode("utf-8")
        encoding = tar.encoding if pax_headers.get("hdrcharset") == "BINARY" else "utf-8"
        decode = self._decode_pax_field  # type: ignore[attr-defined]
        for key, value in records:
            keyword = decode(key, "utf-8", "utf-8", tar.errors)
            if keyword.startswith("GNU.sparse."):
                raise ArchiveRejected(f"{self.name}: GNU sparse entries are not supported")
            if keyword in tarfile.PAX_NAME_FIELDS:
                pax_headers[keyword] = decode(value, encoding, tar.encoding, tar.errors)
            else:
                pax_headers[keyword] = decode(value, "utf-8", "utf-8", tar.errors)
        try:
            following = self.fromtarfile(tar)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            following._apply_pax_info(pax_headers, tar.encoding, tar.errors)  # type: ignore[attr-defined]
            following.offset = self.offset
            if "size" in pax_headers:
                # the extended header replaced the size: the next header starts elsewhere
                offset = following.offset_data
                if following.isreg() or following.type not in tarfile.SUPPORTED_TYPES:
                    offset += following._block(following.size)  # type: ignore[attr-defined]
                tar.offset = offset
        return following


def _pax_records(buf: bytes) -> list[tuple[bytes, bytes]]:
    """The "<length> <keyword>=<value>\\n" records of a pax header, framing checked, in linear time."""
    records = []
    pos = 0
    while pos < len(buf) and buf[pos] != 0:
        match = _PAX_LENGTH.match(buf, pos)
        if match is None:
            raise ArchiveRejected("a malformed pax header")
        end = pos + int(match.group(1))
        if end - pos < 5 or end > len(buf) or buf[end - 1] != 0x0A:  # shortest record: "5 x=\n"
            raise ArchiveRejected("a malformed pax header")
        keyword, equals, value = buf[match.end():end - 1].partition(b"=")
        if not keyword or not equals:
            raise ArchiveRejected("a malformed pax header")
        records.append((keyword, value))
        pos = end
    return records
