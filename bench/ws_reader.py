"""Console socket readers for the console benchmark (not a benchmark itself): bench/wsreader.c, built with
gcc into the run's temp dir, reads CLIENTS sockets in one process (see its header for what it checks).
The raw Docker baseline reads in large chunks and only counts newlines; a Python WebSocket client costs
microseconds per frame and would measure itself, not the daemon (the benchmark shows that figure too)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).with_name("wsreader.c")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def build(into: Path) -> Path:
    """Compile wsreader.c (gcc -O2); the binary lives in the run's temp dir."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("console_throughput needs gcc to build bench/wsreader.c (apt-get install gcc)")
    binary = into / "wsreader"
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    return binary


@dataclass
class ReaderResult:
    """What one socket received (times in the monotonic clock, as `time.monotonic()`)."""

    lines: int
    bad: int
    frames: int
    notices: int
    first: float
    last: float
    exit_at: float
    error: str | None

    @property
    def rate(self) -> float:
        return self.lines / (self.last - self.first) if self.lines > 1 and self.last > self.first else math.nan


class NativeReaders:
    """`clients` console sockets read by one wsreader process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, binary: Path, url: str, clients: int, line: str, timeout: float) -> NativeReaders:
        parts = urlsplit(url)
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        proc = await asyncio.create_subprocess_exec(
            str(binary), parts.hostname or "127.0.0.1", str(parts.port), path, key.decode(), accept.decode(),
            str(clients), line, str(timeout), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        if first.strip() != b"ready":
            _, err = await proc.communicate()
            raise RuntimeError(f"wsreader did not connect: {first!r} {err.decode(errors='replace')[-500:]}")
        return cls(proc)

    async def results(self, timeout: float) -> list[ReaderResult]:
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"wsreader failed ({self.proc.returncode}): {err.decode(errors='replace')[-500:]}")
        results = [ReaderResult(**json.loads(row)) for row in out.decode().splitlines() if row.strip()]
        errors = [r.error for r in results if r.error]
        if errors:
            raise RuntimeError(f"wsreader: {len(errors)} socket(s) failed: {errors[:3]}")
        return results

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
