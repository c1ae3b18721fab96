"""A backup read back is checked against the sha256 recorded when it was written: a damaged or replaced
archive (local disk, S3 object) fails its restore before the volume is touched."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from lightd.errors import ArchiveRejected

DRAIN_CHUNK = 1024 * 1024


class HashingReader:
    """`read(n)` through to `raw`, hashing every byte."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, count: int = -1) -> bytes:
        data = self.raw.read(count)
        self.hash.update(data)
        return data

    def verify(self, expected: str | None) -> None:
        """Read what the decompressor left (padding after the last frame) and compare."""
        while self.read(DRAIN_CHUNK):
            pass
        if expected and self.hash.hexdigest() != expected:
            raise ArchiveRejected("the backup does not match its recorded sha256 (damaged or replaced)")
