"""Deep and wide trees a container builds: every walk and every delete works at any depth with a bounded
number of descriptors and bounded memory, never follows a link, and stops if the tree is swapped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightd.config import VolumeLimits
from lightd.errors import Conflict, TreeTooDeep
from lightd.volumes import archives, files, walk
from tests.volumes.helpers import PeakSampler, build_deep, deepest, remove_all

DEEP = 21_000  # past a default RLIMIT_NOFILE of 1024 and the 20,000 of this machine
FD_BOUND = 2 * walk.KEEP_FDS + 32  # a walk, a second stack (copy) and slack for the test process itself
RSS_BOUND = 100 * 1024 * 1024


@pytest.fixture(autouse=True)
def no_deep_leftovers(tmp_path: Path):
    yield
    remove_all(tmp_path)


@pytest.fixture
def deep(vol: Path) -> Path:
    build_deep(vol, DEEP)
    return vol


def test_usage_of_a_deep_tree_is_bounded_and_partial(box, deep):
    with PeakSampler() as peak:
        capped = files.usage(box, max_depth=4096)
        whole = files.usage(box)
    assert capped.partial and "4096" in capped.partial and capped.as_dict()["partial"] is True
    assert 4096 <= capped.directories < DEEP
    # without a cap the walk reaches the bottom: 21,000 levels, the file there counted
    assert whole.partial is None and whole.directories == DEEP + 1 and whole.bytes == 5 + 5 + len(b"bottom")
    assert peak.fd_growth < FD_BOUND, peak.fd_growth
    assert peak.rss_growth < RSS_BOUND, peak.rss_growth  # no path tuple per node: memory O(depth), not O(depth²)


def test_delete_and_clear_work_at_any_depth(box, deep, untouched):
    build_deep(deep / "dir", 300)
    with PeakSampler() as peak:
        assert files.remove(box, "d") == "directory"
        assert not (deep / "d").exists()
        files.clear(box)
    assert list(deep.iterdir()) == []
    assert peak.fd_growth < FD_BOUND, peak.fd_growth


def test_deep_delete_never_follows_a_link(box, vol, outside, untouched):
    build_deep(vol, 200)
    bottom = vol.joinpath(*["d"] * 150)
    os.symlink(outside, bottom / "escape")  # far below the descriptors kept open
    os.symlink(outside / "sentinel.txt", bottom / "link.txt")
    files.remove(box, "d")
    assert not (vol / "d").exists() and (outside / "sentinel.txt").read_text() == "do not touch"


def test_copy_and_compress_refuse_past_max_depth(box, vol, untouched):
    build_deep(vol, 300)
    before = sorted(p.name for p in vol.iterdir())
    with pytest.raises(TreeTooDeep, match="256"):
        files.copy(box, "d", "copied", max_depth=256)
    with pytest.raises(TreeTooDeep):
        archives.compress(box, ["d"], "tar", "deep.tar", VolumeLimits())
    assert sorted(p.name for p in vol.iterdir()) == before  # no half copy, no archive, no temp file
    # within the limit both work, with bounded descriptors on both sides of the copy
    with PeakSampler() as peak:
        result = files.copy(box, "d", "copied", max_depth=400)
    depth, bottom = deepest(vol / "copied")
    assert result["directories"] == 300 and result["files"] == 1 and depth == 299 and bottom is not None
    assert peak.fd_growth < FD_BOUND, peak.fd_growth


def test_a_tree_swapped_during_the_walk_stops_it(vol):
    build_deep(vol, 100)
    (vol / "elsewhere").mkdir()
    stack = walk.DirStack(os.open(vol, os.O_RDONLY | os.O_DIRECTORY), keep=8)
    try:
        for _ in range(80):
            stack.push("d")
        # the container moves level 40 (whose descriptor is closed) to another parent
        os.rename(vol.joinpath(*["d"] * 40), vol / "elsewhere" / "moved")
        with pytest.raises(Conflict, match="moved"):
            for _ in range(80):
                stack.pop()
        assert stack.depth == 40  # it stopped where '..' no longer led back
    finally:
        stack.close()


def test_usage_of_a_swapped_tree_is_partial_not_an_error(box, vol, monkeypatch):
    build_deep(vol, 100)

    def swapped(self):
        raise Conflict("a folder was moved while lightd was walking the tree; try again")

    monkeypatch.setattr(walk.DirStack, "pop", swapped)
    usage = files.usage(box)
    assert usage.partial and "moved" in usage.partial


def test_wide_directory_is_scanned_once_per_pass(box, vol, monkeypatch):
    wide = vol / "wide"
    wide.mkdir()
    for i in range(300):
        (wide / f"full{i}").mkdir()
        (wide / f"full{i}" / "x").write_text("x")
        (wide / f"empty{i}").mkdir()
        (wide / f"file{i}").write_text("f")
    scans = []
    real = os.scandir

    def counting(fd):
        scans.append(fd)
        return real(fd)

    monkeypatch.setattr(walk.os, "scandir", counting)
    files.remove(box, "wide")
    monkeypatch.undo()
    assert not wide.exists()
    # the wide directory once, and each non-empty child once: no rescan of the parent per child
    assert len(scans) == 1 + 300, len(scans)
