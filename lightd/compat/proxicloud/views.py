"""The one builder of ProxiCloud's container shapes. A `Container` is gathered once per server (vmid,
state, live sample, address, disk use, what its ProxiCloud create asked for) and shaped from there: the
list takes `item()`, the detail `detail()`, `/status` `status()`, search `brief()`. Host figures come from
psutil in a worker thread."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from lightd.compat.base import AddressCache
from lightd.compat.proxicloud.analytics import ACTIVE_STATES, cores_of, cpu_percent

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices
    from lightd.compat.proxicloud.node import ProxiCloudNode
    from lightd.servers.server import Server

MIB = 1024 * 1024
GIB = 1024 * MIB
# A paused server still has its processes: shown "running" (ProxiCloud knows only running and stopped).
PXC_STATUS = {"running": "running", "starting": "running", "stopping": "running", "offline": "stopped", "paused": "running"}
"""lightd states -> Proxmox's (a container is running from its start until its exit)."""


@dataclass(frozen=True, slots=True)
class HostFigures:
    cpu_cores: int
    cpu_percent: float
    memory_total: int
    memory_used: int
    memory_percent: float
    storage_total: int
    storage_used: int
    storage_percent: float
    uptime: int
    load_average: list[float]


def collect_host(storage_path: str) -> HostFigures:
    """psutil and the volumes' filesystem (run in a thread). CPU is measured since the previous call."""
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(storage_path)
    return HostFigures(
        cpu_cores=psutil.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_total=memory.total,
        memory_used=memory.total - memory.available,
        memory_percent=memory.percent,
        storage_total=disk.total,
        storage_used=disk.used,
        storage_percent=round(100.0 * disk.used / disk.total, 1) if disk.total else 0.0,
        uptime=int(time.time() - psutil.boot_time()),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )


@dataclass(frozen=True, slots=True)
class Container:
    """One server as ProxiCloud sees it."""

    vmid: int
    name: str
    status: str
    template: str
    options: dict[str, Any]
    cores: float
    memory_mb: int
    cpu_usage: float
    memory_usage: int
    memory_total: int
    network_in: int
    network_out: int
    disk_usage: int
    disk_total: int
    uptime: int
    ip_address: str | None
    created_at: int | None
    volume_id: str

    def item(self) -> dict[str, Any]:
        """An element of `GET /api/containers`."""
        return {
            "vmid": self.vmid, "name": self.name, "status": self.status, "template": self.template,
            "cpu": _number(self.cores), "memory": self.memory_mb, "disk": self.disk_total, "uptime": self.uptime,
            "cpu_usage": self.cpu_usage, "memory_usage": self.memory_usage, "network_in": self.network_in,
            "network_out": self.network_out, "ip_address": self.ip_address,
        }

    def detail(self) -> dict[str, Any]:
        """`GET /api/containers/:id`: Proxmox-style config strings and the current figures."""
        options = self.options
        network = options.get("network") or {}
        features = options.get("features") or {}
        size = f",size={options['rootfs']}G" if "rootfs" in options else ""
        return {
            "vmid": self.vmid, "name": self.name, "status": self.status, "template": self.template,
            "config": {
                "cores": _number(self.cores),
                "memory": self.memory_mb,
                "swap": options.get("swap", 0),
                "rootfs": f"{options.get('storage', 'local')}:vm-{self.vmid}-disk-0{size}",
                "net0": f"name=eth0,bridge={network.get('bridge', 'docker')},ip={network.get('ip', 'dhcp')}",
                "onboot": options.get("onboot", False),
                "features": ",".join(f"{k}={int(bool(v))}" for k, v in sorted(features.items())),
            },
            "current": {
                "status": self.status, "cpu_usage": self.cpu_usage, "memory_usage": self.memory_usage,
                "memory_total": self.memory_total, "disk_usage": self.disk_usage, "disk_total": self.disk_total,
                "uptime": self.uptime, "network": {"in": self.network_in, "out": self.network_out},
            },
            "ip_address": self.ip_address,
            "created_at": self.created_at,
        }

    def brief(self) -> dict[str, Any]:
        """A search result."""
        return {"vmid": self.vmid, "name": self.name, "status": self.status, "ip_address": self.ip_address}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class ContainerViews:
    """Builds `Container`s from the shared services; caches a running container's address per start."""

    def __init__(self, services: CompatServices, node: ProxiCloudNode) -> None:
        self.services = services
        self.node = node
        self.addresses = AddressCache(services)
        self._host_memory = psutil.virtual_memory().total  # a container without a limit may use it all

    async def host(self) -> HostFigures:
        return await asyncio.to_thread(collect_host, str(self._storage_path()))

    def _storage_path(self) -> Any:
        path = self.services.config.volumes_dir
        return path if path.exists() else self.services.config.data_dir

    async def storage_total(self) -> int:
        return (await asyncio.to_thread(shutil.disk_usage, str(self._storage_path()))).total

    async def all(self) -> list[Container]:
        """Every container, by vmid."""
        pairs = await self.node.sync()
        alive = {server.id for _, server in pairs}
        self.addresses.keep_only(alive)
        storage_total = await self.storage_total()
        return list(await asyncio.gather(*(self.container(vmid, server, storage_total) for vmid, server in pairs)))

    async def one(self, vmid: int) -> Container:
        server = await self.node.find(vmid)
        return await self.container(vmid, server, await self.storage_total())

    async def container(self, vmid: int, server: Server, storage_total: int) -> Container:
        host_cores = os.cpu_count() or 1
        # A container made elsewhere: its real network, no ProxiCloud options.
        options = self.node.options_of(server.id) or {"network": {"bridge": self.services.config.docker.network}}
        sample = server.latest_stats if server.state in ACTIVE_STATES else None
        ip_address, disk_usage = await asyncio.gather(
            self.addresses.ipv4(server), self.services.stats.disk.bytes_of(server.spec.volume_id)
        )
        limit = server.spec.limits.memory
        memory_total = (sample.memory_limit_bytes if sample else 0) or limit or self._host_memory
        created = server.record.get("created_at")
        return Container(
            vmid=vmid,
            name=self.node.name_of(server.id),  # the hostname asked for: two containers may share one
            status=PXC_STATUS.get(server.state, "stopped"),
            template=options.get("template") or server.spec.image,
            options=options,
            cores=float(options.get("cores") or cores_of(server, host_cores)),
            memory_mb=int(options.get("memory") or (limit or memory_total) // MIB),
            cpu_usage=cpu_percent(server, host_cores),
            memory_usage=sample.memory_bytes if sample else 0,
            memory_total=memory_total,
            network_in=sample.rx_bytes if sample else 0,
            network_out=sample.tx_bytes if sample else 0,
            disk_usage=disk_usage,
            disk_total=int(options["rootfs"]) * GIB if options.get("rootfs") else storage_total,
            uptime=server.uptime_ms() // 1000,
            ip_address=ip_address,
            created_at=int(created) if created else None,
            volume_id=server.spec.volume_id,
        )


VIEWS = web.AppKey("proxicloud_views", ContainerViews)


def views_of(request: web.Request) -> ContainerViews:
    return request.config_dict[VIEWS]
