"""Restoring a backup into a volume, all or nothing.

The archive is extracted into `<data_dir>/backups/.restores/<server>--<backup>/staged`, on the volume's
filesystem, through the same checks as a decompress (`volumes/archives.py`, `volumes/readers.py`): header
bombs, entry and byte caps, files through temp files, modes without setuid/setgid/sticky. A backup lightd
made holds only folders and regular files, so any other entry (a link, `..`, an absolute name, a device) is
not skipped but refuses the whole restore. Without `truncate` the staging folder first gets a hard-link
copy of the volume (no data copied; extraction replaces entries by rename, never writes into a shared
inode). Then `volumes/swap.py` exchanges the staged tree and the volume in one step: a daemon killed at any
point leaves the volume either as it was or fully restored, and its `recover` settles the work folder.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import threading
from pathlib import Path
from typing import BinaryIO

import zstandard

from lightd.backups.archive import Interrupted
from lightd.config import VolumeLimits
from lightd.errors import ArchiveRejected
from lightd.volumes.archives import _entry_parts, _Extraction  # the one extraction path, decompress's
from lightd.volumes.readers import DAMAGED, Member, _GuardedTarInfo  # the same header guards
from lightd.volumes.sandbox import DIR_FLAGS, Sandbox, Skips
from lightd.volumes.swap import stage
from lightd.volumes.walk import ENTER, LEAF, TreeWalk

ZSTD_MAX_WINDOW = 1 << 27  # SECURITY: a frame may not make the decoder hold more than 128 MiB
COMMIT_EVERY = 1000  # staged files renamed into place in batches: memory stays flat for any entry count


def work_dir(restores: Path, server: str, backup_id: str) -> Path:
    return restores / f"{server}--{backup_id}"


def prepare(work: Path, volume: Path, truncate: bool, max_depth: int, stop: threading.Event) -> Path:
    """Make the work folder and its staging tree (a hard-link copy of the volume unless `truncate`)."""
    staged = stage(work, volume)
    if not truncate:
        _link_tree(volume, staged, max_depth, stop)
    return staged


def _link_tree(volume: Path, staged: Path, max_depth: int, stop: threading.Event) -> None:
    """Hard-link every non-folder of the volume into `staged`, folders made with their owner and mode."""
    top = os.open(volume, DIR_FLAGS)
    try:
        with Sandbox(staged) as box:
            for event, node in TreeWalk(top, max_depth=max_depth, where="/"):
                if stop.is_set():
                    raise Interrupted("cancelled")
                if event == ENTER:
                    with box.directory(node.parts, create=True) as fd:
                        os.fchown(fd, node.st.st_uid, node.st.st_gid)
                        os.fchmod(fd, node.st.st_mode & 0o777)
                elif event == LEAF:
                    with box.directory(node.parts[:-1]) as fd:
                        # linkat without AT_SYMLINK_FOLLOW: a link is linked as itself, never followed
                        os.link(node.name, node.name, src_dir_fd=node.parent_fd, dst_dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(top)


def open_plain(raw: BinaryIO, compression: str) -> BinaryIO:
    """The tar stream inside a compressed backup."""
    if compression == "zstd":
        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(raw, read_size=1 << 20)  # type: ignore[return-value]
    return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]


def extract(plain: BinaryIO, staged: Path, limits: VolumeLimits, stop: threading.Event) -> dict[str, int]:
    """Extract a backup's tar stream (read once, front to back) into `staged`."""
    guarded = type("_Guarded", (_GuardedTarInfo,), {"max_header_bytes": limits.archive_max_header_bytes})
    skips = Skips()
    with Sandbox(staged) as box:
        job = _Extraction(box, (), limits)
        entries = 0
        try:
            tar = tarfile.open(fileobj=plain, mode="r|", tarinfo=guarded)
            while (info := tar.next()) is not None:
                tar.members.clear()  # stream mode keeps every header otherwise
                entries += 1
                if stop.is_set():
                    raise Interrupted("cancelled")
                if entries > limits.archive_max_entries:
                    raise ArchiveRejected(f"backup has more than {limits.archive_max_entries} entries (backups.restore_max_entries)")
                _extract_one(job, tar, info)
                if len(job.staged) >= COMMIT_EVERY:
                    job.commit(skips)
                    job.staged.clear()
                    job.dirs.clear()
        except (*DAMAGED, zstandard.ZstdError) as exc:
            raise ArchiveRejected(f"the backup cannot be read: {exc}") from None
        job.commit(skips)
    if skips.count:
        raise ArchiveRejected(f"{skips.items[0]['path']}: {skips.items[0]['reason']}")
    return {"entries": entries, "bytes": job.written}


def _extract_one(job: _Extraction, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    entry = _entry_parts(info.name)
    if isinstance(entry, str):
        # SECURITY: zip-slip / absolute names refuse the whole restore (lightd never writes them)
        raise ArchiveRejected(f"{info.name[:200]!r}: {entry}")
    if not entry:
        return
    if info.isdir():
        job.directory(entry)
    elif info.isreg():
        job.file(entry, Member(info.name, "file", info.size, info.mode, lambda: tar.extractfile(info)))  # type: ignore[arg-type, return-value]
    else:
        # SECURITY: a link (or device, FIFO) entry could point outside the volume: the restore is refused
        raise ArchiveRejected(f"{info.name[:200]!r}: link and special entries are refused in a backup")
