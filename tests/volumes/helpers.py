"""Shared by the volume tests: a directory outside the volume, links planted to it, and snapshots."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under `root`: content (None for dirs/links) and mode, to prove nothing changed."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = full.lstat()
            content = full.read_bytes() if stat.S_ISREG(st.st_mode) else None
            seen[str(full.relative_to(root))] = (content, st.st_mode)
    return seen


def make_outside(out: Path) -> Path:
    """A directory outside the volume that a container points links at."""
    (out / "sub").mkdir(parents=True)
    (out / "sentinel.txt").write_text("do not touch")
    (out / "sub" / "deep.txt").write_text("deep")
    os.chmod(out / "sentinel.txt", 0o600)
    return out


def plant_links(root: Path, outside: Path) -> None:
    """Links made directly on disk, as a container would: a dir link, a file link, a nested dir link."""
    os.symlink(outside, root / "escape")
    os.symlink(outside / "sentinel.txt", root / "link.txt")
    os.symlink(outside, root / "dir" / "escape")
