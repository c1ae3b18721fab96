"""The one builder of the LXD panel's shapes. An `Instance` is gathered once per server (state, address,
resources, the description convention) and shaped from there: the list takes `info()`, the detail
`detail()`, the resources route `resources`, the monitor `monitor_entry()`. Host info comes from psutil in
a worker thread."""

from __future__ import annotations

import asyncio
import platform
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from lightd.compat.base import AddressCache
from lightd.errors import LightdError, NotFound
from lightd.http import ascii_int

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices
    from lightd.servers.server import Server

MIB = 1024 * 1024
GIB = 1024 * 1024 * 1024
DEFAULT_MEMORY_MB = 512
"""The real panel's memory_total when the instance has no `limits.memory`."""
DEFAULT_DISK_MB = 10240
"""The real panel's disk_total when the root device has no size; lightd volumes have no quota."""
LXD_STATUS = {"running": "Running", "starting": "Running", "stopping": "Running", "offline": "Stopped", "paused": "Frozen"}


def now_iso() -> str:
    """Local naive ISO time, as the panel's timestamps (`datetime.now().isoformat()`)."""
    return datetime.now().isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class DescriptionFields:
    """What the panel reads from an instance description `name sshport password natstart natend`."""

    ssh_port: int | None = None
    root_password: str | None = None
    nat_ports: str | None = None


def parse_description(text: str, name: str) -> DescriptionFields:
    """The fields of a description in the form the panel writes when it makes an instance (its
    `create_instance`): exactly `name sshport password natstart natend` — the instance's own name, digits,
    a password (`-`: none), digits, digits (natstart 0: no NAT ports). Any other description has no fields
    (null, as the panel shows for an empty one): another front end's `LXC Tools: ubuntu:22.04` or
    `ProxiCloud CT 109` is not a password."""
    tokens = text.split()
    if len(tokens) != 5 or tokens[0] != name or None in (ascii_int(tokens[1]), ascii_int(tokens[3]), ascii_int(tokens[4])):
        return DescriptionFields()
    password = None if tokens[2] == "-" else tokens[2]
    nat_ports = f"{tokens[3]}-{tokens[4]}" if ascii_int(tokens[3]) else None
    return DescriptionFields(ascii_int(tokens[1]), password, nat_ports)


@dataclass(frozen=True, slots=True)
class Instance:
    """One server as the panel sees it."""

    name: str
    status: str
    ipv4: str | None
    architecture: str
    created_at: str | None
    description: str
    resources: dict[str, Any]
    fields: DescriptionFields

    def info(self) -> dict[str, Any]:
        """InstanceInfo."""
        return {
            "name": self.name, "status": self.status, "ipv4": self.ipv4, "ipv6": None,
            "architecture": self.architecture, "created_at": self.created_at, "description": self.description,
        }

    def detail(self) -> dict[str, Any]:
        """InstanceDetail."""
        return {
            "info": self.info(), "resources": self.resources, "ssh_port": self.fields.ssh_port,
            "nat_ports": self.fields.nat_ports, "root_password": self.fields.root_password,
        }

    def monitor_entry(self) -> dict[str, Any]:
        """One element of the monitor's `data.instances` (no password on the broadcast)."""
        return {
            "name": self.name, "status": self.status, "ipv4": self.ipv4, "resources": self.resources,
            "ssh_port": self.fields.ssh_port, "nat_ports": self.fields.nat_ports,
        }


def collect_host_info() -> dict[str, Any]:
    """psutil figures in the seed's units (memory MB, disk GB of "/"); run in a thread. `cpu_percent` is
    measured against the previous call (primed at start-up), never by sleeping; `cpu_usage` is the key
    the panel's next revision reads."""
    cpu = psutil.cpu_percent(interval=None)
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage("/")
    return {
        "cpu_cores": psutil.cpu_count() or 1,
        "cpu_percent": cpu,
        "cpu_usage": cpu,
        "memory_total": memory.total // MIB,
        "memory_used": memory.used // MIB,
        "memory_percent": memory.percent,
        "disk_total": disk.total // GIB,
        "disk_used": disk.used // GIB,
        "disk_percent": disk.percent,
    }


class InstanceViews:
    """Builds `Instance`s from the shared services. Caches what does not change while a container runs
    (its address, per start) and the engine's architecture; disk usage comes from the node-wide cache."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.addresses = AddressCache(services)
        self._architecture: str | None = None

    async def host(self) -> dict[str, Any]:
        """HostInfo."""
        return await asyncio.to_thread(collect_host_info)

    def find(self, name: str) -> Server:
        """The server called `name`, or NotFound in the panel's words."""
        server = self.services.servers.find(name)
        if server is None or server.deleted:
            raise NotFound(f"实例 {name} 不存在")
        return server

    async def instances(self) -> list[Instance]:
        """Every server, in creation order."""
        servers = [s for s in self.services.servers if not s.deleted]
        self._forget_gone({s.id for s in servers})
        return list(await asyncio.gather(*(self.instance(s) for s in servers)))

    async def instance(self, server: Server) -> Instance:
        """One server, with its resources."""
        ipv4, architecture, resources = await asyncio.gather(
            self.addresses.ipv4(server), self._engine_architecture(), self.resources(server)
        )
        description = server.spec.description
        created = server.record.get("created_at")
        return Instance(
            name=server.id,
            status=LXD_STATUS.get(server.state, "Stopped"),
            ipv4=ipv4,
            architecture=architecture,
            created_at=datetime.fromtimestamp(created).isoformat(timespec="seconds") if created else None,
            description=description,
            resources=resources,
            fields=parse_description(description, server.id),
        )

    async def resources(self, server: Server) -> dict[str, Any]:
        """ResourceUsage: CPU % of one core (capped at 100 like the panel), memory and disk MB, network
        MB. A stopped instance shows zeros, with its memory total and its volume's disk use."""
        sample = server.latest_stats if server.state != "offline" else None
        limit = server.spec.limits.memory
        disk_bytes = await self.services.stats.disk.bytes_of(server.spec.volume_id)
        return {
            "cpu_percent": round(min(sample.cpu_absolute, 100.0), 2) if sample else 0.0,
            "memory_used": sample.memory_bytes // MIB if sample else 0,
            "memory_total": limit // MIB if limit else DEFAULT_MEMORY_MB,
            "disk_used": disk_bytes // MIB,
            "disk_total": DEFAULT_DISK_MB,
            "network_rx": sample.rx_bytes // MIB if sample else 0,
            "network_tx": sample.tx_bytes // MIB if sample else 0,
        }

    async def _engine_architecture(self) -> str:
        if self._architecture is None:
            try:
                info = await self.services.servers.engine.engine_info()
                self._architecture = str(info.get("Architecture") or platform.machine())
            except LightdError:
                return platform.machine()
        return self._architecture

    def _forget_gone(self, alive: set[str]) -> None:
        self.addresses.keep_only(alive)


VIEWS = web.AppKey("lxd_panel_views", InstanceViews)
