"""Copying one volume's contents into another (snapshots, restores and clones of a compat front end), with
the same walk as a copy inside a volume: bounded descriptors and depth, links and special files skipped and
reported (never followed), regular files through temp files renamed into place, the destination's disk
budget drawn on as bytes are written. A restore over an existing volume copies into a staging folder and
swaps it in (`swap.py`), so that a stop at any point leaves the volume whole, old or new."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from lightd.errors import AlreadyExists, Conflict
from lightd.volumes import swap
from lightd.volumes.files import _copy_tree, copy_file_at, kind_of
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import Sandbox, Skips, entries_at, lstat_at, os_error


# `_copy_tree` is files.copy's own walk: one tree copy, inside a volume or between two.
def copy_contents(box: Sandbox, destination: Path, *, max_depth: int, budget: WriteBudget) -> dict[str, Any]:
    """Copy every entry of `box`'s root into the volume root `destination` (an entry already there: 409)."""
    result = {"files": 0, "directories": 0, "bytes": 0}
    skips = Skips()
    with Sandbox(destination) as out, box.directory(()) as src_fd, out.directory(()) as dst_fd:
        for name, st in entries_at(src_fd):
            if lstat_at(dst_fd, name) is not None:
                raise AlreadyExists(f"{name}: already exists in the destination")
            try:
                if stat.S_ISDIR(st.st_mode):
                    _copy_tree(src_fd, name, dst_fd, name, (name,), result, skips, max_depth, budget)
                elif stat.S_ISREG(st.st_mode):
                    result["bytes"] += copy_file_at(src_fd, name, dst_fd, name, name, budget)
                    result["files"] += 1
                else:
                    # SECURITY: symlink escape — a link is neither followed nor recreated
                    skips.add((name,), f"{kind_of(st.st_mode)} not copied")
            except OSError as exc:
                raise os_error(exc, name) from None
    return {**result, "skipped": skips.items, "skipped_count": skips.count}


def copy_in_place(box: Sandbox, work: Path, volume: Path, *, max_depth: int, budget: WriteBudget) -> dict[str, Any]:
    """Replace the volume root `volume` with a copy of `box`'s root, made in `work/staged` and swapped in."""
    try:
        staged = swap.stage(work, volume)
    except FileExistsError:
        # the work folder of a restore still running: never removed from under it
        raise Conflict(f"volume {volume.name} is already being restored") from None
    except BaseException:
        swap.remove_work(work)
        raise
    try:
        result = copy_contents(box, staged, max_depth=max_depth, budget=budget)
        swap.swap(work, volume)
    finally:
        swap.remove_work(work)  # the staged copy if not swapped in, else the old tree
    return result
