"""Archives: compress never follows links out; extraction skips hostile entries and stops bombs cleanly."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from lightd.config import VolumeLimits
from lightd.errors import ArchiveRejected, Conflict, PathNotAllowed
from lightd.volumes import archives

LIMITS = VolumeLimits()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def zip_bytes(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, unix_mode in entries:
            info = zipfile.ZipInfo(name)
            if unix_mode is not None:
                info.external_attr = unix_mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def hostile_tar(outside: Path) -> bytes:
    return tar_bytes([
        (tar_entry("good/ok.txt"), b"fine"),
        (tar_entry("../evil.txt"), b"slip"),
        (tar_entry("good/../../evil2.txt"), b"slip"),
        (tar_entry(str(outside / "abs.txt")), b"absolute"),
        (tar_entry("lnk", tarfile.SYMTYPE, str(outside)), None),
        (tar_entry("lnk/through.txt"), b"through the link"),
        (tar_entry("hard", tarfile.LNKTYPE, str(outside / "sentinel.txt")), None),
        (tar_entry("dev", tarfile.CHRTYPE), None),
        (tar_entry("fifo", tarfile.FIFOTYPE), None),
        (tar_entry("escape/planted.txt"), b"into a planted link"),
        (tar_entry("link.txt"), b"replaces the planted link itself"),
    ])


def test_hostile_tar_entries_are_skipped(box, vol, outside, untouched):
    (vol / "up.tar.gz").write_bytes(hostile_tar(outside))
    before = tree(vol)
    result = archives.decompress(box, "up.tar.gz", "out", LIMITS)
    reasons = {s["path"]: s["reason"] for s in result["skipped"]}
    assert (vol / "out/good/ok.txt").read_text() == "fine"
    assert (vol / "out/lnk/through.txt").read_text() == "through the link"  # a real dir, not the link
    assert (vol / "out/link.txt").read_text() == "replaces the planted link itself"
    assert "zip-slip" in reasons["../evil.txt"] and "zip-slip" in reasons["good/../../evil2.txt"]
    assert "absolute" in reasons[str(outside / "abs.txt")]
    assert "symlink" in reasons["lnk"] and "hardlink" in reasons["hard"]
    assert "device" in reasons["dev"] and "fifo" in reasons["fifo"]
    assert result["files"] == 4 and result["skipped_count"] == 7
    assert not any(os.path.islink(p) for p in (vol / "out").rglob("*"))
    assert not (vol.parent / "evil.txt").exists() and not (vol / "evil2.txt").exists()
    assert tree(vol) - before == {"out"} | {"out/" + p for p in tree(vol / "out")}


def test_extract_into_a_planted_link_is_refused(box, vol, outside, untouched):
    (vol / "a.tar").write_bytes(tar_bytes([(tar_entry("escape/x.txt"), b"x"), (tar_entry("ok.txt"), b"ok")], "w"))
    result = archives.decompress(box, "a.tar", None, LIMITS)  # into the archive's directory: the root
    assert result["skipped"][0]["path"] == "escape/x.txt" and "symbolic link" in result["skipped"][0]["reason"]
    assert (vol / "ok.txt").read_text() == "ok"
    with pytest.raises(PathNotAllowed):
        archives.decompress(box, "a.tar", "escape/into", LIMITS)
    (vol / "l.tar").write_bytes(tar_bytes([(tar_entry("link.txt"), b"overwrite")], "w"))
    archives.decompress(box, "l.tar", "", LIMITS)
    assert (vol / "link.txt").read_text() == "overwrite" and not os.path.islink(vol / "link.txt")


def test_hostile_zip_entries_are_skipped(box, vol, outside, untouched):
    data = zip_bytes([
        ("ok/a.txt", b"fine", None),
        ("../../evil.txt", b"slip", None),
        ("..\\..\\evil.txt", b"slip", None),
        ("/abs/evil.txt", b"abs", None),
        ("lnk", str(outside).encode(), stat.S_IFLNK | 0o777),
        ("exec.sh", b"#!/bin/sh", stat.S_IFREG | 0o4755),
    ])
    (vol / "up.zip").write_bytes(data)
    result = archives.decompress(box, "up.zip", "x", LIMITS)
    assert (vol / "x/ok/a.txt").read_text() == "fine"
    assert not os.path.lexists(vol / "x/lnk")
    assert stat.S_IMODE((vol / "x/exec.sh").stat().st_mode) == 0o755  # no setuid from an archive
    assert {s["path"] for s in result["skipped"]} == {"../../evil.txt", "..\\..\\evil.txt", "/abs/evil.txt", "lnk"}


def test_declared_bomb_is_rejected_before_writing(box, vol):
    limits = VolumeLimits(archive_max_total_bytes=10_000)
    (vol / "bomb.tar.gz").write_bytes(tar_bytes([(tar_entry("small.txt"), b"s"), (tar_entry("big"), b"\0" * 50_000)]))
    (vol / "bomb.zip").write_bytes(zip_bytes([("small.txt", b"s", None), ("big", b"\0" * 50_000, None)]))
    before = tree(vol)
    for name in ("bomb.tar.gz", "bomb.zip"):
        with pytest.raises(ArchiveRejected, match="10000"):
            archives.decompress(box, name, "out/deeper", limits)
        assert tree(vol) == before


def test_lying_zip_sizes_stop_and_roll_back(box, vol):
    data = bytearray(zip_bytes([("first.txt", b"a" * 100, None), ("liar", b"\0" * 50_000, None)]))
    # shrink the declared size of "liar" in its central-directory record to 10 bytes
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    (vol / "liar.zip").write_bytes(bytes(data))
    before = tree(vol)
    with pytest.raises(ArchiveRejected):
        archives.decompress(box, "liar.zip", "new/dir", VolumeLimits(archive_max_total_bytes=1000))
    assert tree(vol) == before


def test_actual_bytes_are_capped_and_rolled_back(box, vol):
    # zip and tar readers stop at the declared size; this guards any reader that would not
    limits = VolumeLimits(archive_max_total_bytes=150)
    job = archives._Extraction(box, ("out",), limits)
    job.file(("ok.txt",), archives.Member("ok.txt", "file", 100, 0o644, lambda: io.BytesIO(b"a" * 100)))
    liar = archives.Member("liar", "file", 1, 0o644, lambda: io.BytesIO(b"b" * 100))
    with pytest.raises(ArchiveRejected, match="expands"):
        job.file(("sub", "liar"), liar)
    job.roll_back()
    assert not (vol / "out").exists()


def test_too_many_entries(box, vol):
    (vol / "many.zip").write_bytes(zip_bytes([(f"f{i}", b"", None) for i in range(20)]))
    (vol / "many.tar").write_bytes(tar_bytes([(tar_entry(f"f{i}"), b"") for i in range(20)], "w"))
    for name in ("many.zip", "many.tar"):
        with pytest.raises(ArchiveRejected, match="entries"):
            archives.decompress(box, name, "out", VolumeLimits(archive_max_entries=10))
    assert not (vol / "out").exists()


def test_malformed_archive(box, vol):
    (vol / "junk.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    (vol / "junk.tar").write_bytes(b"hello" * 100)
    for name in ("junk.zip", "junk.tar"):
        with pytest.raises(ArchiveRejected):
            archives.decompress(box, name, "out", LIMITS)


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tar.bz2"])
def test_compress_round_trip_skips_links(box, vol, outside, fmt, untouched):
    result = archives.compress(box, [""], fmt, f"backup.{fmt}", LIMITS)
    assert result["files"] == 2 and result["directories"] == 1
    assert {s["path"] for s in result["skipped"]} == {"escape", "link.txt", "dir/escape"}
    raw = (vol / f"backup.{fmt}").read_bytes()
    assert b"do not touch" not in raw and b"deep" not in raw
    extracted = archives.decompress(box, f"backup.{fmt}", "restored", LIMITS)
    assert extracted["files"] == 2
    assert (vol / "restored/a.txt").read_text() == "hello"
    assert (vol / "restored/dir/inner.txt").read_text() == "inner"


def test_compress_selected_paths_and_refusals(box, vol, untouched):
    result = archives.compress(box, ["a.txt", "dir"], "zip", "sel.zip", LIMITS)
    with zipfile.ZipFile(vol / "sel.zip") as zf:
        assert sorted(zf.namelist()) == ["a.txt", "dir/", "dir/inner.txt"]
    assert result["path"] == "sel.zip"
    with pytest.raises(Conflict):
        archives.compress(box, ["a.txt"], "zip", "sel.zip", LIMITS)
    skipped = archives.compress(box, ["escape"], "zip", "e.zip", LIMITS)  # the link itself is only skipped
    assert skipped["files"] == 0 and skipped["skipped"] == [{"path": "escape", "reason": "symlink not archived"}]
    with pytest.raises(PathNotAllowed):
        archives.compress(box, ["escape/sentinel.txt"], "zip", "e2.zip", LIMITS)
    with pytest.raises(PathNotAllowed):
        archives.compress(box, ["a.txt"], "zip", "escape/out.zip", LIMITS)
    with pytest.raises(ArchiveRejected):
        archives.compress(box, [""], "zip", "capped.zip", VolumeLimits(archive_max_entries=1))
    assert not list(vol.glob(".lightd-tmp-*")) and not (vol / "capped.zip").exists()
    assert archives.default_archive_name(["dir"], "tar.gz") == "dir.tar.gz"
