"""The sandbox and file operations: every attempt through a planted symlink stays inside the volume."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from lightd.config import VolumeLimits
from lightd.errors import BadRequest, Conflict, NotFound, PathNotAllowed
from lightd.volumes import archives, files
from lightd.volumes.sandbox import split_path


@pytest.mark.parametrize("path, parts", [
    ("", ()), (".", ()), ("a", ("a",)), ("a/b/", ("a", "b")), ("./a//b", ("a", "b")), ("a/.hidden", ("a", ".hidden")),
    ("..a/b..", ("..a", "b..")),
])
def test_split_path_accepts(path, parts):
    assert split_path(path) == parts


@pytest.mark.parametrize("path", [
    "..", "../x", "a/../b", "a/..", "/etc/passwd", "/", "a\x00b", "x" * 256, "a/" * 2049, "é" * 128,
])
def test_split_path_refuses(path):
    with pytest.raises(PathNotAllowed):
        split_path(path)


def test_write_through_file_link_is_refused(box, vol, untouched):
    with pytest.raises(PathNotAllowed):
        files.write_file(box, "link.txt", b"pwned")
    assert os.path.islink(vol / "link.txt")


@pytest.mark.parametrize("path", ["escape/new.txt", "escape/sentinel.txt", "dir/escape/new.txt", "escape/sub/x"])
def test_write_through_dir_link_is_refused(box, outside, path, untouched):
    with pytest.raises(PathNotAllowed):
        files.write_file(box, path, b"pwned")


def test_mkdir_through_link_is_refused(box, untouched):
    for path in ("escape/newdir", "dir/escape/a/b", "escape"):
        with pytest.raises((PathNotAllowed, BadRequest)):
            files.make_dirs(box, path)


def test_read_through_links_is_refused(box, untouched):
    for path in ("link.txt", "escape/sentinel.txt", "dir/escape/sub/deep.txt"):
        with pytest.raises(PathNotAllowed):
            box.open_file(path)


def test_list_through_link_is_refused_and_links_are_reported(box, untouched):
    with pytest.raises(PathNotAllowed):
        files.list_dir(box, "escape")
    entries = {e["name"]: e for e in files.list_dir(box, "")}
    assert entries["escape"]["type"] == "symlink"
    assert entries["link.txt"]["type"] == "symlink"
    assert entries["dir"]["type"] == "directory"
    assert entries["a.txt"] == {**entries["a.txt"], "type": "file", "size": 5}
    assert entries["a.txt"]["mode"].startswith("0") and entries["a.txt"]["modified"].endswith("Z")
    assert [e["name"] for e in files.list_dir(box, "")][0] == "dir"  # directories first


def test_delete_link_removes_only_the_link(box, vol, outside, untouched):
    assert files.remove(box, "link.txt") == "symlink"
    assert files.remove(box, "escape") == "symlink"
    assert not os.path.lexists(vol / "link.txt") and not os.path.lexists(vol / "escape")


def test_recursive_delete_never_follows_links(box, vol, untouched):
    assert files.remove(box, "dir") == "directory"
    assert not (vol / "dir").exists()


def test_delete_through_link_is_refused(box, untouched):
    for path in ("escape/sentinel.txt", "escape/sub", "dir/escape/sentinel.txt"):
        with pytest.raises(PathNotAllowed):
            files.remove(box, path)


def test_delete_the_root_is_refused(box, vol):
    with pytest.raises(PathNotAllowed):
        files.remove(box, "")
    assert (vol / "a.txt").exists()


def test_copy_links_refused_or_skipped(box, vol, outside, untouched):
    for source in ("link.txt", "escape", "escape/sentinel.txt"):
        with pytest.raises(PathNotAllowed):
            files.copy(box, source, "copied")
    with pytest.raises(PathNotAllowed):
        files.copy(box, "a.txt", "escape/a.txt")
    result = files.copy(box, "dir", "dir2")
    assert result["files"] == 1 and result["skipped_count"] == 1
    assert result["skipped"][0]["path"] == "dir/escape"
    assert (vol / "dir2" / "inner.txt").read_text() == "inner"
    assert not os.path.lexists(vol / "dir2" / "escape")


def test_copy_file_and_conflicts(box, vol):
    assert files.copy(box, "a.txt", "new/place/b.txt")["bytes"] == 5
    assert (vol / "new" / "place" / "b.txt").read_text() == "hello"
    with pytest.raises(Conflict):
        files.copy(box, "a.txt", "dir")
    with pytest.raises(BadRequest):
        files.copy(box, "dir", "dir/inside")
    with pytest.raises(NotFound):
        files.copy(box, "missing", "x")


def test_rename_never_resolves_links(box, vol, outside, untouched):
    with pytest.raises(PathNotAllowed):
        files.rename(box, "escape/sentinel.txt", "stolen.txt")
    with pytest.raises(PathNotAllowed):
        files.rename(box, "a.txt", "escape/a.txt")
    files.rename(box, "link.txt", "moved-link.txt")  # the link moves as a link
    assert os.readlink(vol / "moved-link.txt") == str(outside / "sentinel.txt")
    with pytest.raises(Conflict):
        files.rename(box, "a.txt", "dir")
    with pytest.raises(BadRequest):
        files.rename(box, "dir", "dir/sub")


def test_chmod_does_not_follow_links(box, vol, untouched):
    with pytest.raises(PathNotAllowed):
        files.chmod(box, "link.txt", 0o777)
    with pytest.raises(PathNotAllowed):
        files.chmod(box, "escape/sentinel.txt", 0o777)
    files.chmod(box, "a.txt", 0o640)
    assert stat.S_IMODE((vol / "a.txt").stat().st_mode) == 0o640


def test_fifo_and_directory_reads_are_refused_without_hanging(box, vol):
    os.mkfifo(vol / "pipe")
    result: list[BaseException] = []

    def read() -> None:
        try:
            box.open_file("pipe")
        except BaseException as exc:  # noqa: BLE001
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "opening a FIFO blocked"
    assert isinstance(result[0], BadRequest)
    with pytest.raises(BadRequest):
        box.open_file("dir")


def test_read_is_capped_at_open_size(box, vol):
    handle, size = box.open_file("a.txt")
    with handle:
        assert size == 5 and handle.read() == b"hello"


def test_write_is_atomic_and_keeps_mode(box, vol):
    os.chmod(vol / "a.txt", 0o600)
    files.write_file(box, "a.txt", b"new content")
    assert (vol / "a.txt").read_bytes() == b"new content"
    assert stat.S_IMODE((vol / "a.txt").stat().st_mode) == 0o600
    files.write_file(box, "deep/er/file.txt", b"x", 0o640)
    assert stat.S_IMODE((vol / "deep/er/file.txt").stat().st_mode) == 0o640
    assert not [p for p in vol.rglob(".lightd-tmp-*")]
    with pytest.raises(BadRequest):
        files.write_file(box, "dir", b"x")
    with pytest.raises(BadRequest):
        files.write_file(box, "a.txt/child", b"x")


def test_mkdir_reports_creation(box, vol):
    assert files.make_dirs(box, "x/y/z") is True
    assert files.make_dirs(box, "x/y/z") is False
    with pytest.raises(BadRequest):
        files.make_dirs(box, "a.txt/sub")


def test_usage_does_not_follow_links(box, vol):
    os.link(vol / "a.txt", vol / "hard.txt")
    usage = files.usage(box)
    assert usage.as_dict() == {"bytes": 5 + 5, "files": 3, "directories": 1, "partial": False, "partial_reason": None}


def test_deep_trees_are_walked_without_recursion(box, vol):
    fd = os.open(vol, os.O_RDONLY)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    assert files.usage(box).directories == 1501
    files.remove(box, "d")
    assert not (vol / "d").exists()


def test_failed_copy_or_compress_creates_nothing(box, vol):
    before = sorted(p.name for p in vol.rglob("*"))
    with pytest.raises(NotFound):
        files.copy(box, "missing", "new/parent/x")
    with pytest.raises(NotFound):
        archives.compress(box, ["missing"], "zip", "new/parent/x.zip", VolumeLimits())
    assert sorted(p.name for p in vol.rglob("*")) == before
