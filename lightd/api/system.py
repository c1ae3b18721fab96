"""GET /system: what this node is — versions, engine, CPUs, memory, disk, servers by state, port pool."""

from __future__ import annotations

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


class InstallCounts(View):
    installing: int
    ready: int
    failed: int


class ServerCounts(View):
    total: int
    state: RuntimeCounts
    install_state: InstallCounts


class PoolCounts(View):
    total: int
    free: int
    in_use: int


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


@routes.get("/system")
@documented(response=SystemReport)
async def get_system(request: web.Request) -> web.Response:
    """The node's report; 200 with `"engine": null` and `engine_error` when the Docker engine is unreachable."""
    return json_response(await system_report(request.config_dict[keys.SERVERS], request.config_dict[keys.PORTS]))
