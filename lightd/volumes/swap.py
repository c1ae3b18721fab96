"""Replacing a volume's whole tree in one step, for every all-or-nothing restore (backups, snapshots).

A work folder (0700, on the volume's file system, under data_dir) holds a journal and the `staged` tree
the caller fills. `swap` exchanges `staged` and the volume with one `renameat2(RENAME_EXCHANGE)`: a daemon
killed at any point leaves the volume either as it was or fully replaced. On file systems without the
exchange it falls back to two renames, journalled, which `recover` finishes at start; otherwise `recover`
only removes the work folder (and the old tree in it).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path
from typing import Any

from lightd.errors import LightdError
from lightd.volumes.sandbox import DIR_FLAGS
from lightd.volumes.walk import remove_tree

JOURNAL, STAGED, OLD = "journal.json", "staged", "old"
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def write_journal(work: Path, **entries: Any) -> None:
    """Replace the work folder's journal in one step (fsynced first)."""
    tmp = work / (JOURNAL + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, work / JOURNAL)


def stage(work: Path, volume: Path) -> Path:
    """Make the work folder (0700) and its empty `staged` tree with the volume's owner and mode; LightdError
    if it is not on the volume's file system (the swap could not be one rename)."""
    work.mkdir(mode=0o700, parents=True)
    write_journal(work, volume=str(volume))
    staged = work / STAGED
    staged.mkdir(mode=0o700)
    top = os.stat(volume)
    if os.stat(staged).st_dev != top.st_dev:
        raise LightdError(f"the restore staging folder {work.parent} is not on the volume's file system")
    os.chown(staged, top.st_uid, top.st_gid)
    os.chmod(staged, top.st_mode & 0o777)
    return staged


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def swap(work: Path, volume: Path) -> None:
    """Put the staged tree in the volume's place in one step (the old tree lands in the work folder)."""
    staged = work / STAGED
    write_journal(work, volume=str(volume), staged_ino=os.stat(staged).st_ino)
    try:
        _exchange(staged, volume)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        os.rename(volume, work / OLD)  # recover() finishes this if the daemon dies in between
        os.rename(staged, volume)


def recover(work: Path) -> bool:
    """Settle a work folder left by an interrupted restore and remove it; whether the volume holds the
    restored tree."""
    try:
        journal = json.loads((work / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        journal = {}
    restored = False
    if "volume" in journal:
        volume = Path(journal["volume"])
        if not volume.exists():  # between the two renames of the fallback
            if "staged_ino" in journal and (work / STAGED).exists():
                os.rename(work / STAGED, volume)
            elif (work / OLD).exists():
                os.rename(work / OLD, volume)
        restored = volume.exists() and os.stat(volume).st_ino == journal.get("staged_ino")
    remove_work(work)
    return restored


def remove_work(work: Path) -> None:
    """Remove a work folder at any depth, links never followed."""
    parent = os.open(work.parent, DIR_FLAGS)
    try:
        remove_tree(parent, work.name, work.name)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)
