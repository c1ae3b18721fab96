"""What this node is (GET /system): lightd's version, the Docker engine, the host's CPUs, memory and the disk of
data_dir, the servers by state and the port pool. With the engine unreachable its part is null and
`engine_error` says why: the rest is the daemon's own and always answers."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import psutil

from lightd import __version__
from lightd.errors import LightdError
from lightd.servers.models import InstallState, RuntimeState

if TYPE_CHECKING:
    from lightd.ports import PortPool
    from lightd.servers.environment import EngineQueries
    from lightd.servers.manager import ServerManager
    from lightd.servers.stats_sampler import StatsSampler

ENGINE_TIMEOUT_SECONDS = 5.0
"""A hung engine must not hang the report: its part is given up after this."""


async def system_report(servers: ServerManager, ports: PortPool, stats: StatsSampler | None = None) -> dict[str, Any]:
    """The node's report (see the module docstring); `stats` says where container stats come from."""
    engine, engine_error = await _engine(servers.engine)
    host = await asyncio.to_thread(_host, servers.config.data_dir)  # statvfs and /proc reads: off the loop
    pool = await ports.list()
    free = sum(1 for port in pool if not port["in_use"])
    return {
        "version": __version__,
        "engine": engine,
        "engine_error": engine_error,
        **host,
        "servers": _server_counts(servers),
        "ports": {"total": len(pool), "free": free, "in_use": len(pool) - free},
        "stats": stats.source() if stats is not None else None,
    }


async def _engine(env: EngineQueries) -> tuple[dict[str, Any] | None, str | None]:
    try:
        async with asyncio.timeout(ENGINE_TIMEOUT_SECONDS):
            version, info = await asyncio.gather(env.engine_version(), env.engine_info())
    except LightdError as exc:
        return None, str(exc)
    except TimeoutError:
        return None, f"Docker engine did not answer within {ENGINE_TIMEOUT_SECONDS:g}s"
    return {
        "version": version.get("Version") or info.get("ServerVersion"),
        "api_version": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "os": info.get("OperatingSystem"),
        "kernel_version": info.get("KernelVersion") or version.get("KernelVersion"),
        "architecture": info.get("Architecture") or version.get("Arch"),
        "cpus": info.get("NCPU"),
        "memory_bytes": info.get("MemTotal"),
    }, None


def _host(data_dir: Path) -> dict[str, Any]:
    disk = shutil.disk_usage(data_dir)
    memory = psutil.virtual_memory()
    return {
        # The count the create and PATCH checks of limits.cpu use.
        "cpus": os.cpu_count() or 1,
        "memory": {"total_bytes": memory.total, "available_bytes": memory.available},
        "disk": {"path": str(data_dir), "total_bytes": disk.total, "used_bytes": disk.used, "free_bytes": disk.free},
    }


def _server_counts(servers: ServerManager) -> dict[str, Any]:
    states = Counter(server.state for server in servers)
    installs = Counter(server.install_state for server in servers)
    return {
        "total": len(servers),
        "state": {state: states.get(state, 0) for state in get_args(RuntimeState)},
        "install_state": {state: installs.get(state, 0) for state in get_args(InstallState)},
        "attached": sum(1 for server in servers if server.attached),
        "recovery": servers.recovery.report(),
    }
