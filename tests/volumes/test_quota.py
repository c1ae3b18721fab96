"""WriteBudget: bytes are reserved against the disk limit before they are written and given back on failure."""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from lightd.config import VolumeLimits
from lightd.errors import DiskQuotaExceeded
from lightd.volumes import archives, files
from lightd.volumes.quota import VolumeDisk, WriteBudget


def disk(limit: int | None, used: int) -> VolumeDisk:
    return VolumeDisk(limit=limit, used=used)


def test_reserve_release_rollback():
    d = disk(100, 40)
    budget = WriteBudget(d)
    budget.reserve(50)
    with pytest.raises(DiskQuotaExceeded) as err:
        budget.reserve(11)
    assert err.value.details == {"limit": 100, "used": 90, "requested": 11}
    budget.check(10)
    with pytest.raises(DiskQuotaExceeded):
        budget.check(11)
    budget.rollback()
    assert d.used == 40 and budget.reserved == 0
    WriteBudget(d).release(1000)
    assert d.used == 0
    unmeasured = disk(100, 0)
    unmeasured.used = None
    WriteBudget(unmeasured).reserve(10**9)  # nothing known yet: nothing to hold it to


def test_concurrent_writers_cannot_overshoot_together():
    d = disk(1000, 0)

    def writer(_: int) -> int:
        budget = WriteBudget(d)
        done = 0
        try:
            for _ in range(100):
                budget.reserve(7)
                done += 7
        except DiskQuotaExceeded:
            pass
        return done

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(writer, range(8)))
    assert total == d.used <= 1000


def test_extraction_counts_actual_bytes_and_gives_them_back(box, vol):
    d = disk(150, 0)
    job = archives._Extraction(box, ("out",), VolumeLimits(), WriteBudget(d))
    job.file(("ok.txt",), archives.Member("ok.txt", "file", 100, 0o644, lambda: io.BytesIO(b"a" * 100)))
    liar = archives.Member("liar", "file", 1, 0o644, lambda: io.BytesIO(b"b" * 100))  # declares 1, holds 100
    with pytest.raises(DiskQuotaExceeded):
        job.file(("liar",), liar)
    job.roll_back()
    assert d.used == 0 and not (vol / "out").exists()


def test_metered_zip_counts_each_byte_once(box, vol):
    d = disk(None, 0)
    result = archives.compress(box, ["a.txt", "dir"], "zip", "m.zip", VolumeLimits(), WriteBudget(d))
    # zip seeks back to patch each local header: those bytes are not counted twice
    assert d.used == result["size"] == (vol / "m.zip").stat().st_size
    with zipfile.ZipFile(vol / "m.zip") as zf:
        assert zf.read("dir/inner.txt") == b"inner"


def test_delete_gives_bytes_back(box, vol):
    d = disk(None, 1000)
    files.remove(box, "dir", WriteBudget(d))
    files.remove(box, "a.txt", WriteBudget(d))
    assert d.used == 1000 - len("inner") - len("hello")
