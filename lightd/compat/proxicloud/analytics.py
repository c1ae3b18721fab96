"""Analytics: one collector per daemon samples every running container every `SAMPLE_INTERVAL_SECONDS`
(30 s, as the real ProxiCloud collector) from the StatsSampler's latest sample into SQLite, keeps
`RETENTION_SECONDS` (30 days) and prunes the rest; the routes read it back in buckets of the requested
interval. Samples older than `FULL_RESOLUTION_SECONDS` are compacted to one per hour (the 7d and 30d ranges
read hourly buckets anyway): about 3,600 rows per container instead of 86,400."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightd.errors import ValidationFailed

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices
    from lightd.compat.proxicloud.store import ProxiCloudStore
    from lightd.servers.server import Server

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_SECONDS = 30.0
"""Read when the collector starts (tests set a shorter one)."""
RETENTION_SECONDS = 30 * 86400
FULL_RESOLUTION_SECONDS = 25 * 3600
"""The 1h and 24h ranges (30 s and 5 min buckets) read full-resolution samples."""
COMPACT_BUCKET_SECONDS = 3600
COMPACT_EVERY_SECONDS = 3600
ACTIVE_STATES = frozenset({"starting", "running", "stopping", "paused"})
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
INTERVALS = {"30s": 30, "1m": 60, "5m": 300, "1h": 3600}
AUTO_INTERVAL = {"1h": "30s", "24h": "5m", "7d": "1h", "30d": "1h"}
"""At most 720 points per series."""
METRICS = ("cpu", "memory", "network", "disk", "summary")


def cores_of(server: Server, host_cores: int) -> float:
    """The cores a container may use: its CPU limit, else the host's."""
    return float(server.spec.limits.cpu or host_cores)


def cpu_percent(server: Server, host_cores: int) -> float:
    """CPU use as Proxmox shows it: percent of the container's cores (0-100)."""
    sample = server.latest_stats if server.state in ACTIVE_STATES else None
    if sample is None:
        return 0.0
    return round(min(sample.cpu_absolute / cores_of(server, host_cores), 100.0), 2)


class Collector:
    """Samples into `proxicloud_samples`. Network figures are stored as bytes moved since the previous
    sample (a restart resets Docker's counters: the new counter value is then the delta). `containers` is
    the node's `sync`: every ProxiCloud container with its vmid."""

    def __init__(self, services: CompatServices, store: ProxiCloudStore,
                 containers: Callable[[], Awaitable[list[tuple[int, Server]]]]) -> None:
        self.services = services
        self.store = store
        self.containers = containers
        self._last_net: dict[str, tuple[int, int]] = {}
        self._compacted_at = 0.0

    def forget(self, server: str) -> None:
        self._last_net.pop(server, None)

    async def run(self) -> None:
        interval = SAMPLE_INTERVAL_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sample_once()
            except Exception:  # noqa: BLE001 - one failed tick must not end the history
                log.exception("proxicloud analytics: sampling failed")
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def sample_once(self) -> int:
        """One tick: a row per running container, then the prune; the rows written."""
        services = self.services
        host_cores = _host_cores()
        now = time.time()
        rows = []
        for vmid, server in await self.containers():
            sample = server.latest_stats if server.state in ACTIVE_STATES else None
            if sample is None:
                self._last_net.pop(server.id, None)
                continue
            previous = self._last_net.get(server.id)
            net_in = _delta(sample.rx_bytes, previous[0] if previous else None)
            net_out = _delta(sample.tx_bytes, previous[1] if previous else None)
            self._last_net[server.id] = (sample.rx_bytes, sample.tx_bytes)
            disk = await services.stats.disk.bytes_of(server.spec.volume_id)
            memory_total = sample.memory_limit_bytes or server.spec.limits.memory or 0
            rows.append((vmid, now, cpu_percent(server, host_cores), sample.memory_bytes, memory_total,
                         net_in, net_out, disk))
        await self.store.add_samples(rows)
        await self.store.prune_samples(now - RETENTION_SECONDS)
        if now - self._compacted_at >= COMPACT_EVERY_SECONDS:
            self._compacted_at = now
            await self.store.compact_samples(now - FULL_RESOLUTION_SECONDS, COMPACT_BUCKET_SECONDS)
        return len(rows)


def _delta(value: int, previous: int | None) -> int:
    if previous is None:
        return 0  # the first sample seen: what came before is not in this range's history
    return value - previous if value >= previous else value


def _host_cores() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Window:
    """A validated `range` and `interval`."""

    range: str
    interval: str

    @property
    def seconds(self) -> int:
        return RANGES[self.range]

    @property
    def bucket(self) -> int:
        return INTERVALS[self.interval]


def parse_window(query: Any) -> Window:
    """`range` (default 1h) and `interval` (default by range); 400 naming the allowed values."""
    range_ = query.get("range", "1h")
    if range_ not in RANGES:
        raise ValidationFailed(f"Invalid range '{range_}' (one of {', '.join(RANGES)})")
    interval = query.get("interval", "auto")
    if interval == "auto":
        interval = AUTO_INTERVAL[range_]
    elif interval not in INTERVALS:
        raise ValidationFailed(f"Invalid interval '{interval}' (one of auto, {', '.join(INTERVALS)})")
    return Window(range_, interval)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"average": None, "min": None, "max": None}
    return {"average": round(sum(values) / len(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def shape(metric: str, vmid: int, window: Window, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric's answer from the bucketed rows of `Store.proxicloud_series`."""
    head = {"vmid": vmid, "metric": metric, "range": window.range, "interval": window.interval,
            "data_points": len(rows)}
    bucket = window.bucket
    if metric == "cpu":
        data = [{"timestamp": int(r["ts"]), "value": round(r["cpu"], 2)} for r in rows]
        return {**head, "data": data, **_stats([p["value"] for p in data])}
    if metric == "memory":
        data = [{"timestamp": int(r["ts"]), "value": int(r["memory"]),
                 "percent": round(100.0 * r["memory"] / r["memory_total"], 2) if r["memory_total"] else None}
                for r in rows]
        return {**head, "data": data, **_stats([p["value"] for p in data])}
    if metric == "network":
        data = [{"timestamp": int(r["ts"]), "in": int(r["net_in"]), "out": int(r["net_out"]),
                 "in_rate": int(r["net_in"] / bucket), "out_rate": int(r["net_out"] / bucket)} for r in rows]
        return {**head, "data": data, "totals": {"in": sum(p["in"] for p in data), "out": sum(p["out"] for p in data)}}
    # disk: lightd samples the volume's usage; per-container block I/O is not collected (read/write null).
    data = [{"timestamp": int(r["ts"]), "usage": int(r["disk"]), "read": None, "write": None,
             "read_rate": None, "write_rate": None} for r in rows]
    return {**head, "data": data, "totals": {"read": None, "write": None}}


def summary(
    vmid: int, window: Window, rows: list[dict[str, Any]], *, cpu_now: float, memory_now: int, memory_total: int,
    disk_usage: int, disk_total: int,
) -> dict[str, Any]:
    """`/summary`: current figures from the live sample, the rest over the range."""
    cpu = _stats([r["cpu"] for r in rows])
    memory = _stats([r["memory"] for r in rows])
    last = rows[-1] if rows else None
    bucket = window.bucket
    return {
        "vmid": vmid,
        "range": window.range,
        "cpu": {"current": cpu_now, "average": cpu["average"], "min": cpu["min"], "max": cpu["max"]},
        "memory": {"current": memory_now, "average": int(memory["average"]) if memory["average"] is not None else None,
                   "total": memory_total,
                   "percent": round(100.0 * memory_now / memory_total, 2) if memory_total else None},
        "network": {"in_rate": int(last["net_in"] / bucket) if last else 0,
                    "out_rate": int(last["net_out"] / bucket) if last else 0,
                    "total_in": int(sum(r["net_in"] for r in rows)), "total_out": int(sum(r["net_out"] for r in rows))},
        "disk": {"usage": disk_usage, "total": disk_total,
                 "percent": round(100.0 * disk_usage / disk_total, 2) if disk_total else None,
                 "read_rate": None, "write_rate": None},
    }
