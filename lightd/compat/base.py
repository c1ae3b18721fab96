"""What every compat front end shares: lazy access to the daemon's services, and the few composite
operations foreign APIs need (create-and-start with defaults, delete with the volume, image mapping).
Front ends translate shapes; the work is done by the same ServerManager, VolumeService and PortPool."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from lightd import keys
from lightd.auth import TokenService
from lightd.config import Config
from lightd.errors import DockerUnavailable, LightdError, ValidationFailed
from lightd.events import EventBus
from lightd.ports import PortPool, PortSpec
from lightd.servers.manager import ServerManager
from lightd.servers.models import ContainerSpec, validate_image
from lightd.servers.server import Server
from lightd.store import Store
from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)
T = TypeVar("T")

# Keeps a compat-created container alive like a booted system would; exits on SIGTERM (docker-init
# forwards it), so a graceful stop is quick.
KEEPALIVE_COMMAND = "echo container ready; while true; do sleep 3600; done"
COMPAT_READY_TIMEOUT = 300.0


def services_of(request: web.Request) -> CompatServices:
    """The daemon's services, from a front end's handler (mounted or on its own port)."""
    return request.config_dict[keys.COMPAT]


async def require_engine(request: web.Request) -> None:
    """DockerUnavailable (503) unless the engine answers: for a route that cannot answer without it."""
    await services_of(request).servers.require_engine()


class CompatServices:
    """The daemon's services as seen by a front end. Resolved from the main app at request time, so a
    front end can be built before start-up and served both under /compat/<name> and on its own port."""

    def __init__(self, main_app: web.Application) -> None:
        self._app = main_app

    @property
    def config(self) -> Config:
        return self._app[keys.CONFIG]

    @property
    def servers(self) -> ServerManager:
        return self._app[keys.SERVERS]

    @property
    def volumes(self) -> VolumeService:
        return self._app[keys.VOLUMES]

    @property
    def ports(self) -> PortPool:
        return self._app[keys.PORTS]

    @property
    def tokens(self) -> TokenService:
        return self._app[keys.TOKENS]

    @property
    def events(self) -> EventBus:
        return self._app[keys.EVENTS]

    @property
    def stats(self) -> Any:
        """The StatsSampler (its `disk` cache walks a volume at most once a minute for the whole node)."""
        return self._app[keys.STATS]

    def tasks(self) -> Any:
        return self._app[keys.TASKS]

    @property
    def store(self) -> Store:
        """The daemon's SQLite store (a front end's own tables are queried through its methods there)."""
        return self._app[keys.STORE]

    async def resolve_image(self, name: str) -> str:
        """A foreign image name -> the local image: the configured mapping first, then an image the
        engine already has under that exact name; anything else is refused (400)."""
        mapped = self.config.docker.image_map.get(name)
        if mapped:
            return mapped
        try:
            validate_image(name)
        except ValueError:
            raise ValidationFailed(f"Invalid image name: {name}") from None
        if await self.servers.engine.image_exists(name):
            return name
        known = ", ".join(sorted(self.config.docker.image_map)) or "none configured"
        raise ValidationFailed(f"Unknown image {name!r} (known: {known})")

    async def create_and_start(
        self, name: str, image: str, *, description: str = "", ports: list[PortSpec] | None = None,
        memory: int | None = None, cpu: float | None = None, start: bool = True,
    ) -> Server:
        """Create a lightd container with a fresh volume and a keep-alive command, wait for its install,
        and start it. On failure nothing is left behind (container, ports, volume)."""
        limits: dict[str, Any] = {}
        if memory:
            limits["memory"] = memory
        if cpu:
            limits["cpu"] = cpu
        return await self.create_in_new_volume({
            "internal_id": name, "image": await self.resolve_image(image), "startup_command": KEEPALIVE_COMMAND,
            "description": description, "ports": [p.model_dump() for p in ports or []], "limits": limits,
        }, start=start)

    async def create_in_new_volume(self, fields: dict[str, Any], *, start: bool) -> Server:
        """A server from `fields` (a ContainerSpec without its volume) in a fresh volume it owns, ready and
        (with `start`) started; on failure nothing is left behind (container, ports, volume)."""
        volume_id = (await self.volumes.create())["volume_id"]
        try:
            spec = ContainerSpec.model_validate({**fields, "volume_id": volume_id, "owned_volume": True})
        except Exception:
            await self.volumes.delete(volume_id)
            raise
        return await self.servers.create_and_wait(spec, start=start, timeout=COMPAT_READY_TIMEOUT)

    async def run_owned(self, work: Awaitable[T], name: str) -> T:
        """Run `work` in a task the daemon owns: a client that disconnects does not cut it in half. Its
        error is handed back to the caller (not logged as a failed task)."""
        return await self.tasks().run_shielded(work, name=name)


class AddressCache:
    """A container's IPv4 address as the foreign APIs show it: known only while it runs, one inspect per
    start, then cached."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self._addresses: dict[str, tuple[float | None, str | None]] = {}

    async def ipv4(self, server: Server) -> str | None:
        if server.state == "offline":
            self._addresses.pop(server.id, None)
            return None
        cached = self._addresses.get(server.id)
        if cached is not None and cached[0] == server.started_at and cached[1]:
            return cached[1]
        try:
            address, _ = await self.services.servers.engine.addresses(server.id)
        except DockerUnavailable:
            raise
        except LightdError as exc:
            log.debug("%s: no address: %s", server.id, exc)
            return None
        self._addresses[server.id] = (server.started_at, address)
        return address

    def keep_only(self, alive: set[str]) -> None:
        """Forget the containers that are gone."""
        for name in [n for n in self._addresses if n not in alive]:
            del self._addresses[name]
