"""The port pool: the ip/port/protocol triples containers may publish, and who holds each."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightd.errors import AlreadyExists, NotFound, PortInUse, ValidationFailed
from lightd.store import Store

Protocol = Literal["tcp", "udp"]


def normalize_ip(value: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be an IPv4 or IPv6 address")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


class PortSpec(BaseModel):
    """One pool entry as clients send it."""

    model_config = ConfigDict(extra="forbid")
    ip: str
    port: int = Field(ge=1, le=65535, strict=True)
    protocol: Protocol = "tcp"

    @field_validator("ip", mode="before")
    @classmethod
    def _ip(cls, value: Any) -> str:
        return normalize_ip(value)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.ip, self.port, self.protocol)


def port_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "ip": row["ip"],
        "port": row["port"],
        "protocol": row["protocol"],
        "in_use": bool(row["in_use"]),
        "container": row["container"],
    }


class PortPool:
    """Adds, lists, hands out and releases ports; a port held by a container cannot be deleted, and the
    daemon's own listening ports (`own_ports`) are never in it."""

    def __init__(self, store: Store, own_ports: Iterable[int] = ()) -> None:
        self.store = store
        self.own_ports = frozenset(own_ports)

    def _refuse_own(self, spec: PortSpec, field: str) -> None:
        # SECURITY: the daemon's own ports in the pool. A container holding api.port (or a front end's
        # port) makes it a published port to everything that trusts the pool, e.g. Container Codes'
        # reverse proxy, which would then forward to the native API. Refused on every IP: a pool entry on
        # 0.0.0.0, the daemon's own address or loopback all reach the daemon, and no other IP needs it.
        if spec.port in self.own_ports:
            raise ValidationFailed(
                f"{field}: port {spec.port} is one of lightd's own listening ports (api.port or an enabled "
                "compat front end's port) and cannot be in the port pool", details={"field": field})

    async def add(self, spec: PortSpec) -> dict[str, Any]:
        """Add one port to the pool (409 if present, 400 for the daemon's own ports)."""
        self._refuse_own(spec, "port")
        if not await self.store.insert_port(*spec.key):
            raise AlreadyExists(f"port {spec.ip}:{spec.port}/{spec.protocol} is already in the pool")
        return await self.get(spec.ip, spec.port, spec.protocol)

    async def list(self, *, ip: str | None = None, protocol: str | None = None, in_use: bool | None = None) -> list[dict[str, Any]]:
        """Ports matching the filters."""
        return [port_view(r) for r in await self.store.list_ports(ip=ip, protocol=protocol, in_use=in_use)]

    async def get(self, ip: str, port: int, protocol: str | None = None) -> dict[str, Any]:
        """One port; with no protocol given and both tcp and udp in the pool, 400 asks for it."""
        rows = await self.store.list_ports(ip=ip, port=port, protocol=protocol)
        if not rows:
            raise NotFound(f"port {ip}:{port}{'/' + protocol if protocol else ''} is not in the pool")
        if len(rows) > 1:
            raise ValidationFailed("protocol: both tcp and udp exist for this ip/port; add ?protocol=tcp|udp",
                                   details={"field": "protocol"})
        return port_view(rows[0])

    async def random_available(self, *, ip: str | None = None, protocol: str | None = None) -> dict[str, Any]:
        """A random free port (404 when none is free)."""
        free = [row for row in await self.store.list_ports(ip=ip, protocol=protocol, in_use=False)
                if row["port"] not in self.own_ports]  # rows added before own ports were refused
        if not free:
            raise NotFound("no available port in the pool matches")
        return port_view(random.choice(free))

    async def set_in_use(self, ip: str, port: int, protocol: str | None, in_use: bool) -> dict[str, Any]:
        """Mark a port used or free by hand; a port a container holds cannot be freed this way."""
        current = await self.get(ip, port, protocol)
        if not in_use and current["container"]:
            raise PortInUse(f"port {ip}:{port}/{current['protocol']} is held by container {current['container']}")
        if in_use and current["in_use"]:
            raise PortInUse(f"port {ip}:{port}/{current['protocol']} is already in use")
        await self.store.set_port_use(ip, port, current["protocol"], in_use, None)
        return await self.get(ip, port, current["protocol"])

    async def delete(self, ip: str, port: int, protocol: str | None = None) -> dict[str, Any]:
        """Remove a port from the pool (409 while in use)."""
        current = await self.get(ip, port, protocol)
        if current["in_use"]:
            holder = f" by container {current['container']}" if current["container"] else ""
            raise PortInUse(f"port {ip}:{port}/{current['protocol']} is in use{holder}")
        await self.store.delete_port(ip, port, current["protocol"])
        return current

    async def bulk_delete(self, specs: list[PortSpec]) -> dict[str, Any]:
        """Delete several ports; each is reported as deleted, not found or in use (nothing in use is removed)."""
        deleted, missing, in_use = [], [], []
        for spec in specs:
            rows = await self.store.list_ports(ip=spec.ip, port=spec.port, protocol=spec.protocol)
            if not rows:
                missing.append(spec.model_dump())
            elif rows[0]["in_use"]:
                in_use.append(spec.model_dump())
            else:
                await self.store.delete_port(*spec.key)
                deleted.append(spec.model_dump())
        return {"deleted": deleted, "not_found": missing, "in_use": in_use}

    async def claim(self, specs: list[PortSpec], container: str) -> None:
        """Reserve every port for `container` atomically: 400 if one is not in the pool, 409 if one is taken."""
        for spec in specs:
            self._refuse_own(spec, "ports")  # also a row that entered the pool before they were refused
            rows = await self.store.list_ports(ip=spec.ip, port=spec.port, protocol=spec.protocol)
            if not rows:
                raise ValidationFailed(f"ports: {spec.ip}:{spec.port}/{spec.protocol} is not in the port pool",
                                       details={"field": "ports"})
            if rows[0]["in_use"] and rows[0]["container"] != container:
                raise PortInUse(f"port {spec.ip}:{spec.port}/{spec.protocol} is already in use")
        if not await self.store.claim_ports([s.key for s in specs], container):
            raise PortInUse("a requested port was taken concurrently")

    async def release_all(self, container: str, keep: list[PortSpec] = ()) -> None:
        """Free every port `container` holds except `keep`."""
        await self.store.release_ports_of(container, [s.key for s in keep])
