"""file_transfer: uploading and range-downloading a big file through lightd, against a plain aiohttp app.

    python bench/file_transfer.py [--quick] [--size-mib N] [--rounds N]

A 1 GiB file of random bytes (--quick: 128 MiB) is moved with curl, on 127.0.0.1, `--rounds` times (3;
--quick 2) each, and the median time is kept:

- upload: `curl -F files=@big.bin` to `POST /volumes/{id}/files/upload` (multipart, streamed to a temp file,
  held to the disk limit, fsync'ed, renamed into place), against `curl -T big.bin` to bench/transfer_baseline.py
  writing the raw body to disk (no multipart, no fsync). Target: >= 0.7x the baseline's MB/s.
- range download: `curl -r 0-<half>` of the uploaded file from `GET /volumes/{id}/files/content` (206), against
  the same range from aiohttp's FileResponse (sendfile(2) on asyncio's loop). Target: >= 0.8x.

The daemon's peak RSS during each phase (sampled every 20 ms) must stay < 150 MB (streaming, not
buffering). The page cache is warm for both sides alike (the file was just written).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import Bench, free_port, median, note, parse_args, ratio, report, verdict

import aiohttp
import psutil

UPLOAD_TARGET = 0.7
RANGE_TARGET = 0.8
RSS_LIMIT_MB = 150.0
MIB = 1024 * 1024


class PeakRss:
    """The highest RSS of a process while a `with` block runs, sampled in a thread every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 1e6


def curl(args: list[str]) -> float:
    """Seconds one curl transfer took; fails loudly on an HTTP error."""
    started = time.perf_counter()
    result = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args[-3:])}: {result.stderr.strip()}")
    return elapsed


def auth(headers: dict[str, str]) -> list[str]:
    return [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (8 * MIB)):
            out.write(os.urandom(8 * MIB))
        out.write(os.urandom(size % (8 * MIB)))


async def main(bench: Bench) -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--size-mib", type=int, default=None),
                                          p.add_argument("--rounds", type=int, default=None)))
    size = (args.size_mib or (128 if args.quick else 1024)) * MIB
    rounds = args.rounds or (2 if args.quick else 3)
    source = bench.tmp / "big.bin"
    note(f"writing a {size // MIB} MiB random file")
    await asyncio.to_thread(make_file, source, size)

    daemon = bench.daemon({"volumes": {"max_upload_bytes": 2 * size}, "log_level": "WARNING"})
    await daemon.start()
    base_dir = bench.tmp / "baseline"
    base_dir.mkdir()
    base_port = free_port()
    bench.spawn([sys.executable, str(Path(__file__).with_name("transfer_baseline.py")), str(base_port), str(base_dir)])
    base = f"http://127.0.0.1:{base_port}"
    await _wait_baseline(base)

    async with aiohttp.ClientSession(headers=daemon.headers) as session:
        async with session.post(daemon.url + "/volumes") as resp:
            volume_id = (await resp.json())["volume_id"]
    hdrs = auth(daemon.headers)
    upload_url = f"{daemon.url}/volumes/{volume_id}/files/upload"
    times: dict[str, list[float]] = {"lightd_up": [], "base_up": [], "lightd_range": [], "base_range": []}
    peaks = {"upload": 0.0, "range": 0.0}
    for i in range(rounds):
        note(f"round {i + 1}/{rounds}: upload")
        times["base_up"].append(await asyncio.to_thread(curl, ["-T", str(source), f"{base}/upload/big.bin"]))
        with PeakRss(daemon.pid) as rss:
            times["lightd_up"].append(await asyncio.to_thread(curl, [*hdrs, "-F", f"files=@{source}", upload_url]))
        peaks["upload"] = max(peaks["upload"], rss.mb)
    half = size // 2
    content_url = f"{daemon.url}/volumes/{volume_id}/files/content?path=big.bin"
    for i in range(rounds):
        note(f"round {i + 1}/{rounds}: range download")
        times["base_range"].append(await asyncio.to_thread(curl, ["-r", f"0-{half - 1}", f"{base}/file/big.bin"]))
        with PeakRss(daemon.pid) as rss:
            times["lightd_range"].append(await asyncio.to_thread(curl, [*hdrs, "-r", f"0-{half - 1}", content_url]))
        peaks["range"] = max(peaks["range"], rss.mb)

    def mbps(key: str, nbytes: int) -> float:
        return nbytes / median(times[key]) / 1e6

    up, up_base = mbps("lightd_up", size), mbps("base_up", size)
    rg, rg_base = mbps("lightd_range", half), mbps("base_range", half)
    up_ratio, rg_ratio = ratio(up, up_base), ratio(rg, rg_base)
    report("upload", f"{size // MIB} MiB multipart: lightd {up:.0f} MB/s vs curl -T to plain aiohttp {up_base:.0f} MB/s "
                     f"-> ratio {up_ratio:.2f} (target >= {UPLOAD_TARGET}: {verdict(up_ratio >= UPLOAD_TARGET)}); "
                     f"daemon peak RSS {peaks['upload']:.0f} MB ({verdict(peaks['upload'] < RSS_LIMIT_MB)} < {RSS_LIMIT_MB:.0f})")
    report("range download", f"{half // MIB} MiB (206): lightd {rg:.0f} MB/s vs FileResponse sendfile {rg_base:.0f} MB/s "
                             f"-> ratio {rg_ratio:.2f} (target >= {RANGE_TARGET}: {verdict(rg_ratio >= RANGE_TARGET)}); "
                             f"daemon peak RSS {peaks['range']:.0f} MB ({verdict(peaks['range'] < RSS_LIMIT_MB)} < {RSS_LIMIT_MB:.0f})")
    report("times", "median s: " + ", ".join(f"{k} {median(v):.2f}" for k, v in times.items()))


async def _wait_baseline(base: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/file/none") as resp:
                    if resp.status == 404:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("baseline app not answering")


if __name__ == "__main__":
    common.run("file_transfer", main)
