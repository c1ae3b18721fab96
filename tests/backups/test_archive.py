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
