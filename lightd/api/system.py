"""GET /system: what this node is — versions, engine, CPUs, memory, disk, servers by state, port pool."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.http import json_response
from lightd.system import system_report

routes = web.RouteTableDef()


class EngineReport(View):
    """What the Docker engine says of itself (each field null when it does not say)."""

    version: str | None
    api_version: str | None
    storage_driver: str | None
    cgroup_version: str | None
    os: str | None
    kernel_version: str | None
    architecture: str | None
    cpus: int | None
    memory_bytes: int | None


class MemoryReport(View):
    total_bytes: int
    available_bytes: int


class DiskReport(View):
    path: str
    """data_dir."""
    total_bytes: int
    used_bytes: int
    free_bytes: int


class RuntimeCounts(View):
    offline: int
    starting: int
    running: int
    stopping: int
    paused: int
    restoring: int
    transferring: int


class InstallCounts(View):
    installing: int
    ready: int
    failed: int


class RecoveryReport(View):
    """Servers compared with the engine since the daemon started (consoles re-attached, exits seen)."""

    pending: int
    """Not compared yet: each shows its last announced state (one read or action on it compares it at once)."""
    rounds: int
    """Comparisons of every server done: at start-up, and each time the engine came back."""
    last_round_seconds: float | None
    """From its list of containers to its last server compared."""
    last_round_ended_at: datetime | None


class ServerCounts(View):
    total: int
    state: RuntimeCounts
    install_state: InstallCounts
    attached: int
    """Servers whose console stream is being read."""
    recovery: RecoveryReport


class PoolCounts(View):
    total: int
    free: int
    in_use: int


class StatsSourceReport(View):
    """Where container stats come from."""

    source: Literal["cgroup_v1", "cgroup_v2", "docker_stats", "detecting"]
    """cgroup files read in one batch per round (v1 or v2), or the engine's stats stream per server."""
    stream_fallbacks: int
    """Running servers whose cgroup files could not be read: sampled from the engine's stream instead."""


class SystemReport(View):
    """`system_report` (lightd/system.py)."""

    version: str
    """lightd's version."""
    engine: EngineReport | None
    """null when the engine is unreachable (`engine_error` says why)."""
    engine_error: str | None
    cpus: int
    """The host's CPUs (the bound of limits.cpu)."""
    memory: MemoryReport
    disk: DiskReport
    servers: ServerCounts
    ports: PoolCounts
    stats: StatsSourceReport | None


@routes.get("/system")
@documented(response=SystemReport)
async def get_system(request: web.Request) -> web.Response:
    """The node's report; 200 with `"engine": null` and `engine_error` when the Docker engine is unreachable."""
    config = request.config_dict
    return json_response(await system_report(config[keys.SERVERS], config[keys.PORTS], config[keys.STATS]))
