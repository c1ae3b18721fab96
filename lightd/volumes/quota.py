"""Disk limits of volumes: the last measured usage of each volume, kept current by lightd's own writes, and
the budget one write operation draws on (`DiskLimits` keeps them for every volume).

A measurement is a full walk of the volume (bounded, in a worker thread), so it is cached for
`volumes.usage_cache_seconds`, as Wings caches its disk checks. Between two walks every byte lightd writes
is reserved against the figure before it is written, and what a failed operation had reserved is given
back, so no write of lightd's can overshoot the limit by more than nothing. Writes a server makes itself
are only seen by the next walk: that is what the start check (`VolumeService.over_disk_limit`) is for.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightd.errors import DiskQuotaExceeded

if TYPE_CHECKING:
    from lightd.config import VolumeLimits
    from lightd.volumes.files import Usage


@dataclass
class VolumeDisk:
    """One volume's disk limit and usage figure; `used` is None until first measured."""

    limit: int | None = None
    used: int | None = None  # bytes: the last walk's figure plus lightd's writes since
    last: "Usage | None" = None  # the last walk's full result
    measured_at: float = -math.inf  # loop time the last walk began
    finished_at: float = -math.inf  # and ended
    walk_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one walk per volume at a time
    mutex: threading.Lock = field(default_factory=threading.Lock)  # writes adjust `used` from worker threads

    def over_limit(self) -> bool:
        return self.limit is not None and self.used is not None and self.used > self.limit

    def measured(self, usage: "Usage", started_at: float, finished_at: float) -> None:
        with self.mutex:
            self.used, self.last = usage.bytes, usage
            self.measured_at, self.finished_at = started_at, finished_at


class WriteBudget:
    """What one operation writes to a volume, reserved against its disk limit as it goes.

    Synchronous and thread-safe: the file operations call it from their worker thread. Without a limit it
    only keeps the usage figure current. `reserve` before writing, `release` what the operation freed,
    `rollback` (on failure) what it had reserved.
    """

    def __init__(self, disk: VolumeDisk | None = None) -> None:
        self.disk = disk
        self.reserved = 0

    def check(self, size: int) -> None:
        """Refuse up front when `size` more bytes (declared sizes) would not fit; reserves nothing."""
        disk = self.disk
        if disk is None or disk.limit is None or disk.used is None:
            return
        with disk.mutex:
            if disk.used + size > disk.limit:
                raise self._exceeded(disk, size)

    def reserve(self, size: int) -> None:
        """Count `size` bytes about to be written; DiskQuotaExceeded if they would pass the limit."""
        disk = self.disk
        if disk is None or size <= 0:
            return
        with disk.mutex:
            if disk.used is None:
                return
            if disk.limit is not None and disk.used + size > disk.limit:
                raise self._exceeded(disk, size)
            disk.used += size
            self.reserved += size

    def release(self, size: int) -> None:
        """Bytes this operation freed (a replaced or deleted file)."""
        disk = self.disk
        if disk is None or size <= 0:
            return
        with disk.mutex:
            if disk.used is not None:
                disk.used = max(0, disk.used - size)

    def rollback(self) -> None:
        """Give back everything reserved: the operation failed and removed what it wrote."""
        reserved, self.reserved = self.reserved, 0
        self.release(reserved)

    @staticmethod
    def _exceeded(disk: VolumeDisk, size: int) -> DiskQuotaExceeded:
        return DiskQuotaExceeded(
            f"the volume's disk limit of {disk.limit} bytes would be exceeded ({disk.used} bytes used)",
            details={"limit": disk.limit, "used": disk.used, "requested": size})


class DiskLimits:
    """Every volume's `VolumeDisk` (made when a limit is set or a figure asked for), measured by `walk`, and
    the budgets lightd's writes draw on. Knows no volume records: the service checks the id first."""

    def __init__(self, limits: VolumeLimits, walk: Callable[[str], Awaitable[Usage]]) -> None:
        self.limits = limits
        self._walk = walk  # the volume's usage, walked in a worker thread
        self._disks: dict[str, VolumeDisk] = {}

    def get(self, volume_id: str) -> VolumeDisk | None:
        """The volume's disk record, if it has one yet."""
        return self._disks.get(volume_id)

    def disk(self, volume_id: str) -> VolumeDisk:
        """The volume's disk record, made on first use."""
        disk = self._disks.get(volume_id)
        if disk is None:
            disk = self._disks[volume_id] = VolumeDisk()
        return disk

    def forget(self, volume_id: str) -> None:
        """Drop a deleted volume's record."""
        self._disks.pop(volume_id, None)

    def set_limit(self, volume_id: str, limit: int | None) -> None:
        """Hold lightd's writes to `limit` bytes; 0 or None: unlimited."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"disk limit: not a byte count: {limit!r}")
        if limit or volume_id in self._disks:
            self.disk(volume_id).limit = limit or None

    def fresh_bytes(self, volume_id: str) -> int | None:
        """The usage figure when it is recent enough to need no walk; None otherwise."""
        cached = self.cached(volume_id)
        return cached[0] if cached is not None and not cached[1] else None

    def cached(self, volume_id: str) -> tuple[int, bool] | None:
        """The last usage figure and whether it is older than usage_cache_seconds; None before the first walk."""
        disk = self._disks.get(volume_id)
        if disk is None or disk.used is None or disk.last is None:
            return None
        return disk.used, disk.measured_at < asyncio.get_running_loop().time() - self.limits.usage_cache_seconds

    async def measure(self, volume_id: str, disk: VolumeDisk, *, fresh: bool = False) -> Usage:
        """Walk the volume unless a walk recent enough exists (one walk per volume at a time)."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        async with disk.walk_lock:
            last = disk.last
            if last is not None and (disk.finished_at >= asked if fresh
                                     else disk.measured_at >= asked - self.limits.usage_cache_seconds):
                return last
            started = loop.time()
            usage = await self._walk(volume_id)
            disk.measured(usage, started, loop.time())
            return usage

    async def budget(self, volume_id: str) -> WriteBudget:
        """What one write operation draws on: the volume's limit (measured first if stale), or nothing."""
        disk = self._disks.get(volume_id)
        if disk is None:
            return WriteBudget()  # no limit and no figure to keep current
        if disk.limit is not None:
            await self.measure(volume_id, disk)
        return WriteBudget(disk)
