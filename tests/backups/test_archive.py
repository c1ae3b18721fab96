"""The archive writer on its own: the I/O rate limit is observable (a ratio, not an absolute time), and a
cancelled backup stops."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from lightd.backups.archive import Interrupted, Settings, write_archive
from lightd.volumes.patterns import IgnoreRules


def archive(root, rate: float = 0, stop: threading.Event | None = None) -> float:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        began = time.monotonic()
        write_archive(fd, IgnoreRules([]), io.BytesIO(), Settings("zstd", 3, 0, rate, 64, None), stop or threading.Event(),
                      lambda percent: None)
        return time.monotonic() - began
    finally:
        os.close(fd)


def test_rate_limit_is_observable(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(1024 * 1024))
    unlimited = min(archive(tmp_path) for _ in range(2))
    limited = archive(tmp_path, rate=4 * 1024 * 1024)  # 4 MiB at 4 MiB/s: about a second
    assert limited > 0.7
    assert limited / max(unlimited, 1e-3) > 3, (limited, unlimited)


def test_a_stopped_backup_ends(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Interrupted):
        archive(tmp_path, rate=512 * 1024, stop=stop)


class _FailingSink:
    """Takes `good` writes, then fails as a full disk does."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > self.good:
            raise OSError(28, "No space left on device")
        return len(data)


class _StuckSink:
    """Never returns from its first write until released (a disk or upload that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.returned = False

    def write(self, data: bytes) -> int:
        self.entered.set()
        self.release.wait(2)
        self.returned = True
        return len(data)


def test_the_sinks_error_reaches_the_backup_and_no_thread_is_left(tmp_path):
    """The archive is written by a thread of its own: a sink failing mid-stream fails the backup with that
    error (not a hang, not a truncated archive reported complete) and the thread ends."""
    for i in range(8):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(1024 * 1024))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError, match="No space left"):
            write_archive(fd, IgnoreRules([]), _FailingSink(good=2), Settings("zstd", 1, 0, 0, 64, None),
                          threading.Event(), lambda percent: None)
    finally:
        os.close(fd)
    deadline = time.monotonic() + 5
    while any(t.name == "backup-output" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "backup-output" for t in threading.enumerate())


def test_a_backup_stopped_while_its_sink_hangs_ends_after_the_write_returns(tmp_path):
    """Stopped while the sink hangs in a write: the backup ends Interrupted, but only once that write has
    returned (the caller closes the sink next: closing a file under a write could hit a reused descriptor)."""
    for i in range(12):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(1024 * 1024))
    sink, stop = _StuckSink(), threading.Event()
    threading.Thread(target=lambda: sink.entered.wait(10) and stop.set()).start()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(Interrupted):
            write_archive(fd, IgnoreRules([]), sink, Settings("zstd", 1, 0, 0, 64, None), stop, lambda percent: None)
    finally:
        os.close(fd)
    assert sink.returned
    assert not any(t.name == "backup-output" for t in threading.enumerate())
