"""Shared by the volume tests: a directory outside the volume, links planted to it, and snapshots."""

from __future__ import annotations

import os
import stat
import threading
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


def build_deep(root: Path, depth: int, name: str = "d", leaf: bytes | None = b"bottom") -> None:
    """`depth` nested directories below `root`, as a container builds them (relative mkdir in a loop: no
    path ever grows), with a file at the bottom."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        if leaf is not None:
            out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, leaf)
            os.close(out)
    finally:
        os.close(fd)


def deepest(root: Path, name: str = "d", limit: int = 1_000_000) -> tuple[int, os.stat_result | None]:
    """How many `name` levels go down from `root`, and the lstat of bottom.txt there (None if absent)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while depth < limit:
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                break
            os.close(fd)
            fd = child
            depth += 1
        try:
            return depth, os.stat("bottom.txt", dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return depth, None
    finally:
        os.close(fd)


class PeakSampler:
    """Samples this process's RSS and open descriptors in a thread until stopped; keeps the peaks.
    The daemon under test runs in this process, so these are the daemon's figures."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.rss0 = self.peak_rss = self.process.memory_info().rss
        self.fds0 = self.peak_fds = self.process.num_fds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            self.peak_fds = max(self.peak_fds, self.process.num_fds())

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def rss_growth(self) -> int:
        return self.peak_rss - self.rss0

    @property
    def fd_growth(self) -> int:
        return self.peak_fds - self.fds0



def remove_all(root: Path) -> None:
    """Empty `root` at any depth without recursion (pytest's own cleanup recurses and fails past ~1000
    levels, for every later session on the machine): down the first subdirectory, up through '..'."""
    if not root.is_dir():
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    names: list[str] = []
    try:
        while True:
            sub = None
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                child = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(sub)
                continue
            if not names:
                return
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
