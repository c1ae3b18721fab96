"""StatsSampler: one stats task per running server (never per socket). It reads the environment's stats
stream, keeps the latest sample on the server and publishes a "stats" event at most every
`stats_interval_seconds`; a server going offline gets one final zeroed sample."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lightd.errors import LightdError
from lightd.events import EventBus
from lightd.servers.environment import Environment, StatsSample
from lightd.servers.state import ACTIVE_STATES
from lightd.tasks import TaskOwner

if TYPE_CHECKING:
    from lightd.servers.manager import ServerManager
    from lightd.servers.server import Server
    from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)

ZERO = StatsSample(memory_bytes=0, memory_limit_bytes=0, cpu_absolute=0.0, rx_bytes=0, tx_bytes=0)
RETRY_SECONDS = 1.0
NOT_RUNNING_POLL_SECONDS = 0.25
"""Wait before re-opening a stats stream that ended while the server is still up (created, not yet started)."""


def stats_payload(state: str, sample: StatsSample | None, disk_bytes: int, uptime_ms: int,
                  disk_limit_bytes: int | None = None) -> dict[str, Any]:
    """The `stats` shape of the protocol (field names as upstream Lightd and Wings; `disk_limit_bytes` is
    the server's `limits.disk`, 0 for none)."""
    sample = sample or ZERO
    return {
        "state": state,
        "cpu_absolute": sample.cpu_absolute,
        "memory_bytes": sample.memory_bytes,
        "memory_limit_bytes": sample.memory_limit_bytes,
        "network": {"rx_bytes": sample.rx_bytes, "tx_bytes": sample.tx_bytes},
        "disk_bytes": disk_bytes,
        "disk_limit_bytes": disk_limit_bytes or 0,
        "uptime": uptime_ms,
    }


class DiskUsage:
    """Bytes a server's volume uses (VolumeService's cached figure) and its disk limit."""

    def __init__(self, volumes: VolumeService) -> None:
        self.volumes = volumes

    async def bytes_of(self, volume_id: str) -> int:
        """Cached bytes of `volume_id` (0 when it cannot be read)."""
        try:
            return await self.volumes.usage_bytes(volume_id)
        except (LightdError, OSError, ValueError) as exc:
            log.debug("disk usage of %s: %s", volume_id, exc)
            return 0


class StatsSampler:
    """Follows the servers' state events and keeps one sampler task per server that is up."""

    def __init__(
        self, *, servers: ServerManager, env: Environment, events: EventBus, tasks: TaskOwner,
        volumes: VolumeService, interval: float,
    ) -> None:
        self.servers = servers
        self.env = env
        self.events = events
        self.tasks = tasks
        self.interval = interval
        self.disk = DiskUsage(volumes)
        self._samplers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin following state events (and sample the servers already up)."""
        # Subscribed here, synchronously, so no state event between now and the task's first step is lost.
        sub = self.events.subscribe(kinds={"event"}, maxsize=4096)
        for server_id in [s.id for s in self.servers]:
            self._sync(server_id)
        self._watcher = self.tasks.spawn(self._watch(sub), name="stats-watcher")

    async def close(self) -> None:
        """Stop every sampler (no zeroed samples: the daemon is going away, not the servers)."""
        tasks = [t for t in (self._watcher, *self._samplers.values()) if t is not None]
        self._samplers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def active(self, server_id: str) -> bool:
        return server_id in self._samplers

    async def payload(self, server: Server) -> dict[str, Any]:
        """The current stats of `server`: its latest sample, or zeros when it is not up."""
        up = server.state in ACTIVE_STATES
        sample = server.latest_stats if up else None
        disk = await self.disk.bytes_of(server.record["volume_id"])
        return stats_payload(server.state, sample, disk, server.uptime_ms(), server.spec.limits.disk)

    async def _watch(self, sub: Any) -> None:
        with sub:
            async for event in sub:
                # The event only says "look again": the server's current state decides (a dropped or late
                # event cannot leave a sampler running for a server that is down).
                if event.server is not None:
                    self._sync(event.server)

    def _sync(self, server_id: str) -> None:
        server = self.servers.find(server_id)
        up = server is not None and not server.deleted and server.state in ACTIVE_STATES
        task = self._samplers.get(server_id)
        if up and task is not None and task.done():
            task = None  # it saw the server down before this event did (a quick restart): sample again
        if up and task is None:
            assert server is not None
            self._samplers[server_id] = self.tasks.spawn(self._sample(server), name=f"stats:{server_id}")
        elif not up and task is not None:
            del self._samplers[server_id]
            task.cancel()
            if server is not None and not server.deleted:
                server.latest_stats = None
                self.tasks.spawn(self._publish_final(server), name=f"stats-final:{server_id}")

    async def _publish_final(self, server: Server) -> None:
        self.events.publish("stats", server.id, await self.payload(server))

    async def _sample(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        last_published = float("-inf")
        while server.state in ACTIVE_STATES and not server.deleted:
            try:
                # A stream opened on a created, not yet running container never delivers (the engine
                # does not follow the start): open it only once the container runs.
                if not (await self.env.status(server.id)).running:
                    await asyncio.sleep(NOT_RUNNING_POLL_SECONDS)
                    continue
                async for sample in self.env.stats(server.id):
                    if server.state not in ACTIVE_STATES:
                        break
                    server.latest_stats = sample
                    now = loop.time()
                    # 10 % slack: Docker's ~1 s cadence jitters, and 0.98 s must not skip a 1 s interval.
                    if now - last_published >= self.interval * 0.9:
                        last_published = now
                        self.events.publish("stats", server.id, await self.payload(server))
            except LightdError as exc:
                log.debug("%s: stats stream failed: %s", server.id, exc)
            await asyncio.sleep(RETRY_SECONDS)
