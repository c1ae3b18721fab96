"""Archive headers a tenant crafted: every size is checked before tarfile or zipfile reads it into memory."""

from __future__ import annotations

import io
import lzma
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from lightd.config import VolumeLimits
from lightd.errors import ArchiveRejected
from lightd.volumes import archives

LIMITS = VolumeLimits()


def raw_header(name: str, kind: bytes, size: int) -> bytes:
    """One 512-byte tar header declaring `size` bytes, whatever follows it."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT) if kind in (tarfile.REGTYPE, tarfile.DIRTYPE) else \
        tarfile.TarInfo._create_header(  # noqa: SLF001 (tobuf refuses to build these types by hand)
            {"name": name, "mode": 0o644, "uid": 0, "gid": 0, "size": size, "mtime": 0, "type": kind,
             "linkname": "", "uname": "", "gname": "", "devmajor": 0, "devminor": 0, "prefix": ""},
            tarfile.USTAR_FORMAT, "utf-8", "strict")


def pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def block(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def member(name: str, data: bytes) -> bytes:
    return raw_header(name, tarfile.REGTYPE, len(data)) + block(data)


def extract(vol: Path, box, data: bytes, name: str = "up.tar", limits: VolumeLimits = LIMITS) -> dict:
    (vol / name).write_bytes(data)
    return archives.decompress(box, name, "out", limits)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_extended_header_over_the_limit_is_refused_before_it_is_read(box, vol, kind):
    # declares 1 GiB; only a little follows: the refusal must come from the declared size, not a short read
    data = raw_header("././@Long", kind, 1 << 30) + b"x" * 4096 + b"\0" * 1024
    with pytest.raises(ArchiveRejected, match="archive_max_header_bytes"):
        extract(vol, box, data)
    assert not (vol / "out").exists()


def test_headers_under_the_limit_still_work(box, vol):
    long_name = "dir/" + "/".join(["n" * 200] * 3)  # past ustar's 255 bytes: a pax path record
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(long_name)
        info.size, info.pax_headers = 2, {"comment": "c" * 10_000}
        tf.addfile(info, io.BytesIO(b"ok"))
    with tarfile.open(fileobj=(gnu := io.BytesIO()), mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("gnu/" + "/".join(["g" * 200] * 3))  # a GNU long-name header
        info.size = 3
        tf.addfile(info, io.BytesIO(b"gnu"))
    assert extract(vol, box, buf.getvalue())["files"] == 1
    assert (vol / "out" / long_name).read_text() == "ok"
    assert extract(vol, box, gnu.getvalue(), "gnu.tar")["files"] == 1


def test_a_chain_of_headers_is_bounded_in_total(box, vol):
    limits = VolumeLimits(archive_max_header_bytes=8192)
    small = block(pax_record("comment", b"c" * 6000))
    chained = raw_header("a", tarfile.XHDTYPE, len(small)) + small + raw_header("b", tarfile.XHDTYPE, len(small)) \
        + small + member("f.txt", b"data")
    with pytest.raises(ArchiveRejected, match="archive_max_header_bytes"):
        extract(vol, box, chained, limits=limits)
    many = b"".join(raw_header("x", tarfile.XHDTYPE, 512) + block(pax_record("comment", b"c")) for _ in range(40))
    with pytest.raises(ArchiveRejected, match="extended headers"):
        extract(vol, box, many + member("f.txt", b"data"), "many.tar")


def test_sparse_entries_are_refused(box, vol):
    gnu_sparse = raw_header("s", tarfile.GNUTYPE_SPARSE, 0) + b"\0" * 1024
    with pytest.raises(ArchiveRejected, match="sparse"):
        extract(vol, box, gnu_sparse)
    pax = block(pax_record("GNU.sparse.major", b"1") + pax_record("GNU.sparse.minor", b"0"))
    with pytest.raises(ArchiveRejected, match="sparse"):
        extract(vol, box, raw_header("p", tarfile.XHDTYPE, len(pax)) + pax + member("f", b"1" * 10), "pax.tar")


def test_pax_records_are_parsed_in_linear_time(box, vol):
    # A run of digits made tarfile's pax regex backtrack quadratically (CVE-2024-6232): with 256 KiB of
    # them, minutes of CPU holding the GIL, the whole daemon frozen.
    payload = b"9" * (256 * 1024)
    data = raw_header("p", tarfile.XHDTYPE, len(payload)) + block(payload) + member("f", b"x")
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            extract(vol, box, data)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "pax header parsing did not finish"
    assert isinstance(outcome[0], ArchiveRejected) and "malformed pax" in outcome[0].message


def test_global_headers_keep_only_what_matters(box, vol):
    noise = block(b"".join(pax_record(f"junk.{i}", b"v") for i in range(2000)) + pax_record("mtime", b"5"))
    data = raw_header("g", tarfile.XGLTYPE, len(noise)) + noise + member("a", b"1") + member("b", b"2")
    assert extract(vol, box, data)["files"] == 2


def test_xz_dictionary_is_limited(box, vol):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    # a 1 GiB dictionary the decoder would allocate and fill as it goes
    huge = lzma.compress(payload.getvalue(), format=lzma.FORMAT_XZ,
                         filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 30, "mf": lzma.MF_HC3}])
    with pytest.raises(ArchiveRejected, match="[Mm]emory"):
        extract(vol, box, huge, "huge.tar.xz")
    normal = lzma.compress(payload.getvalue(), format=lzma.FORMAT_XZ)
    assert extract(vol, box, normal, "ok.tar.xz")["files"] == 1


def test_zip_index_size_is_capped(box, vol):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(20):
            info = zipfile.ZipInfo(f"f{i}")
            info.extra = b"\x99\x99" + (60_000).to_bytes(2, "little") + b"e" * 60_000  # 60 KB extra field each
            info.comment = b"c" * 60_000
            zf.writestr(info, b"x")
    limits = VolumeLimits(archive_max_index_bytes=65536)
    with pytest.raises(ArchiveRejected, match="zip index"):
        extract(vol, box, buf.getvalue(), "big.zip", limits)
    assert extract(vol, box, buf.getvalue(), "big.zip")["files"] == 20  # under the default cap


def test_entries_past_max_depth_are_skipped(box, vol):
    deep = "/".join(["d"] * 300) + "/f.txt"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in (deep, "ok/f.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"1"))
    result = extract(vol, box, buf.getvalue())
    assert result["files"] == 1 and "max_depth" in result["skipped"][0]["reason"]
    assert not (vol / "out" / "d").exists()
