"""StatsSampler: one sampling round for every running server, every `stats_interval_seconds`, run by the
timer wheel (no task per server). A round asks the environment for all the servers' samples in one batch
(`Environment.sample_stats`: cgroup files on Docker), keeps each on its server and publishes one "stats" event
per server. A server the batch cannot read falls back to the engine's stats stream (one task for that server
only, as every server had before). A server going offline gets one final zeroed sample."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lightd.errors import LightdError
from lightd.events import EventBus
from lightd.servers.environment import Environment, StatsSample
from lightd.servers.state import ACTIVE_STATES
from lightd.tasks import TaskOwner
from lightd.timers import Timer, TimerWheel

if TYPE_CHECKING:
    from lightd.servers.manager import ServerManager
    from lightd.servers.server import Server
    from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)

ZERO = StatsSample(memory_bytes=0, memory_limit_bytes=0, cpu_absolute=0.0, rx_bytes=0, tx_bytes=0)
RETRY_SECONDS = 1.0
SPREAD_SHARE = 0.5
"""A round's reads of many servers are spread over this share of the interval (the rest is its margin)."""
WALKS_PER_ROUND = 8
"""Disk-usage walks one stats round waits for (the rest use their last figure until a later round)."""
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
        fresh = self.volumes.fresh_usage_bytes(volume_id)
        if fresh is not None:
            return fresh
        try:
            return await self.volumes.usage_bytes(volume_id)
        except (LightdError, OSError, ValueError) as exc:
            log.debug("disk usage of %s: %s", volume_id, exc)
            return 0


class StatsSampler:
    """Follows the servers' state events; samples the servers that are up in rounds on the timer wheel."""

    def __init__(
        self, *, servers: ServerManager, env: Environment, events: EventBus, tasks: TaskOwner,
        volumes: VolumeService, interval: float, timers: TimerWheel,
    ) -> None:
        self.servers = servers
        self.env = env
        self.events = events
        self.tasks = tasks
        self.interval = interval
        self.timers = timers
        self.disk = DiskUsage(volumes)
        self.rounds = 0
        self.disk_bytes: dict[str, int] = {}
        """Each server's last disk figure (GET /metrics reads it without walking a volume)."""
        self._up: set[str] = set()
        self._streams: dict[str, asyncio.Task[None]] = {}
        """Servers the batch cannot read: the engine's stream, one task each (the fallback)."""
        self._watcher: asyncio.Task[None] | None = None
        self._timer: Timer | None = None

    def start(self) -> None:
        """Begin following state events (and sample the servers already up)."""
        # Subscribed here, synchronously, so no state event between now and the task's first step is lost.
        sub = self.events.subscribe(kinds={"event"}, maxsize=4096)
        for server_id in [s.id for s in self.servers]:
            self._sync(server_id)
        self._watcher = self.tasks.spawn(self._watch(sub), name="stats-watcher")
        self._timer = self.timers.every(self.interval, self._round, name="stats-round", first=0)

    async def close(self) -> None:
        """Stop sampling (no zeroed samples: the daemon is going away, not the servers)."""
        if self._timer is not None:
            self._timer.cancel()
            running = self._timer.running
        else:
            running = None
        tasks = [t for t in (self._watcher, running, *self._streams.values()) if t is not None]
        self._up.clear()
        self._streams.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def active(self, server_id: str) -> bool:
        return server_id in self._up

    def source(self) -> dict[str, Any]:
        """Where samples come from: the batch's source and how many servers use the stream instead."""
        return {"source": self.env.stats_source(), "stream_fallbacks": len(self._streams)}

    async def payload(self, server: Server) -> dict[str, Any]:
        """The current stats of `server`: its latest sample, or zeros when it is not up."""
        return self._payload(server, await self.disk.bytes_of(server.record["volume_id"]))

    def _payload(self, server: Server, disk: int) -> dict[str, Any]:
        sample = server.latest_stats if server.state in ACTIVE_STATES else None
        if not server.deleted:
            self.disk_bytes[server.id] = disk
        return stats_payload(server.state, sample, disk, server.uptime_ms(), server.spec.limits.disk)

    async def _watch(self, sub: Any) -> None:
        with sub:
            async for event in sub:
                # The event only says "look again": the server's current state decides (a dropped or late
                # event cannot leave a server sampled while it is down).
                if event.server is not None:
                    self._sync(event.server)

    def _up_server(self, server_id: str) -> Server | None:
        server = self.servers.find(server_id)
        up = server is not None and not server.deleted and server.state in ACTIVE_STATES
        return server if up else None

    def _sync(self, server_id: str) -> None:
        if self.servers.find(server_id) is None:
            self.disk_bytes.pop(server_id, None)
        server = self._up_server(server_id)
        stream = self._streams.get(server_id)
        if server is not None:
            self._up.add(server_id)
            if stream is not None and stream.done():
                del self._streams[server_id]  # it saw the server down before this event did: batch it again
        elif server_id in self._up:
            self._up.discard(server_id)
            if stream is not None:
                del self._streams[server_id]
                stream.cancel()
            server = self.servers.find(server_id)
            if server is not None and not server.deleted:
                server.latest_stats = None
                self.tasks.spawn(self._publish(server), name=f"stats-final:{server_id}")

    async def _publish(self, server: Server) -> None:
        self.events.publish("stats", server.id, await self.payload(server))

    async def _round(self) -> None:
        """One round: every server up (but those on a stream) sampled in one batch, then published."""
        # Asked with no server up too: the environment learns its source at once (GET /system says it).
        # Not those the engine has not confirmed since the daemon started: after a restart they wait for the
        # recovery round (it re-attaches them meanwhile; inspecting them all here would double its engine calls).
        pending = self.servers.recovery.pending
        ids = [i for i in self._up if i not in self._streams and i not in pending]
        self.rounds += 1
        try:
            samples = await self.env.sample_stats(ids, spread=self.interval * SPREAD_SHARE)
        except LightdError as exc:
            log.debug("stats round failed: %s", exc)
            return
        walks: list[Any] = []
        for server_id in ids:
            server = self._up_server(server_id)
            if server is None or server_id not in self._up:
                continue
            if server_id not in samples:
                self._streams[server_id] = self.tasks.spawn(self._stream(server), name=f"stats:{server_id}")
                continue
            sample = samples[server_id]
            if sample is not None:  # None: not running yet (created, starting)
                server.latest_stats = sample
                self._publish_cached(server, walks)
        # Bounded: servers started together have figures that expire together; their walks spread over rounds.
        try:
            for walk in walks:
                await walk
        finally:
            for walk in walks:
                walk.close()  # those a cancelled round did not reach (a no-op for the others)

    def _publish_cached(self, server: Server, walks: list[Any]) -> None:
        """Publish with the volume's last disk figure (no task, no await per server). A stale figure is still
        used, and a walk to refresh it is queued; a volume never walked waits for its walk — at most
        WALKS_PER_ROUND of either per round."""
        cached = self.disk.volumes.cached_usage(server.record["volume_id"])
        due = len(walks) < WALKS_PER_ROUND
        if cached is not None:
            self.events.publish("stats", server.id, self._payload(server, cached[0]))
            if cached[1] and due:
                walks.append(self.disk.bytes_of(server.record["volume_id"]))
        elif due:
            walks.append(self._publish(server))

    async def _stream(self, server: Server) -> None:
        """The fallback: the engine's stream of one server's samples, published at most every interval."""
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
                        await self._publish(server)
            except LightdError as exc:
                log.debug("%s: stats stream failed: %s", server.id, exc)
            await asyncio.sleep(RETRY_SECONDS)
