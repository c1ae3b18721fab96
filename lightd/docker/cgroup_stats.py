"""CgroupStats: `Environment.sample_stats` on a Docker engine. Learns the cgroup layout from the engine once,
each container's id, cgroup parent and init pid from one inspect when it is first sampled, then reads every
container of a round in one batch in one worker thread (lightd/docker/cgroups.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from pathlib import Path

from lightd.docker.cgroups import (
    CGROUP_ROOT,
    PROC_ROOT,
    CgroupLayout,
    CgroupReader,
    CgroupTarget,
    detect_layout,
)
from lightd.docker.client import DockerClient
from lightd.errors import LightdError
from lightd.servers.environment import StatsSample

log = logging.getLogger(__name__)

DOCKER_STATS = "docker_stats"
DETECTING = "detecting"
INSPECT_CONCURRENCY = 16
"""Containers inspected at once when many are first sampled together (a daemon start with hundreds up)."""
READ_CHUNK = 32
"""Containers read in one go by the worker thread (about 5 ms of file reads) before the next part waits its turn."""
FAILURES_BEFORE_FALLBACK = 2
"""Reads that failed in a row, each after a fresh inspect, before a container is left to the engine's stream."""


class CgroupStats:
    """Samples of running containers from their cgroup files; `mode` "docker" turns it off."""

    def __init__(self, client: DockerClient, name_of: Callable[[str], str], mode: str = "auto",
                 root: Path = CGROUP_ROOT, proc: Path = PROC_ROOT) -> None:
        self.client = client
        self.name_of = name_of
        self.mode = mode
        self.root = root
        self.proc = proc
        self._reader: CgroupReader | None = None
        self._detected = mode == "docker"
        self._targets: dict[str, CgroupTarget] = {}
        self._failures: dict[str, int] = {}
        self._unreadable: set[str] = set()

    @property
    def layout(self) -> CgroupLayout | None:
        return self._reader.layout if self._reader is not None else None

    def source(self) -> str:
        """"cgroup_v1" / "cgroup_v2" once the files are known to be readable, "docker_stats" when they are
        not, "detecting" until the first sampling round has asked the engine (never a guess)."""
        if not self._detected:
            return DETECTING
        layout = self.layout
        return layout.source if layout is not None else DOCKER_STATS

    async def detect(self) -> CgroupLayout | None:
        """The layout (asks the engine once; DockerUnavailable while it is away, so it is asked again)."""
        if not self._detected:
            info = await self.client.info()
            layout = await asyncio.to_thread(
                detect_layout, info.get("CgroupDriver"), info.get("CgroupVersion"), self.root, self.proc)
            self._reader = CgroupReader(layout) if layout is not None else None
            self._detected = True
            log.info("container stats from %s (engine cgroup driver %s, version %s)", self.source(),
                     info.get("CgroupDriver"), info.get("CgroupVersion"))
        return self.layout

    async def sample(self, internal_ids: Collection[str], spread: float = 0.0) -> dict[str, StatsSample | None]:
        """One round: see `Environment.sample_stats`."""
        if await self.detect() is None or self._reader is None:
            return {}
        wanted = set(internal_ids)
        for gone in set(self._targets) - wanted:
            del self._targets[gone]
        self._failures = {k: v for k, v in self._failures.items() if k in wanted}
        self._unreadable &= wanted
        if not wanted:
            return {}
        todo = [i for i in wanted - self._unreadable if i not in self._targets]
        limit = asyncio.Semaphore(INSPECT_CONCURRENCY)

        async def target_of(internal_id: str) -> None:
            async with limit:
                target = await self._inspect(internal_id)
            if target is not None:
                self._targets[internal_id] = target

        await asyncio.gather(*(target_of(i) for i in todo))
        reading = {i: self._targets[i] for i in wanted if i in self._targets}
        self._reader.keep_only(reading)
        # In parts of READ_CHUNK containers spread over `spread` seconds: 500 containers are about 3,500 file
        # reads, and read at once they would take a core from the event loop for a burst every round.
        items = list(reading.items())
        parts = [dict(items[at:at + READ_CHUNK]) for at in range(0, len(items), READ_CHUNK)]
        read: dict[str, StatsSample | None] = {}
        ended: set[str] = set()
        for n, part in enumerate(parts):
            if n:
                await asyncio.sleep(spread / len(parts))
            part_read, part_ended = await asyncio.to_thread(self._read_round, self._reader, part)
            read.update(part_read)
            ended |= part_ended
        out: dict[str, StatsSample | None] = {i: None for i in wanted - self._unreadable}
        for internal_id, sample in read.items():
            out[internal_id] = sample
            if sample is not None:
                self._failures.pop(internal_id, None)
                continue
            # Stopped since the inspect, restarted (a new pid) or unreadable: inspect again next round.
            del self._targets[internal_id]
            if internal_id in ended:
                # Its process is gone (a stop or restart under way; the engine may still report the old pid
                # as running for a while): not a failure, or every restart of a busy node would leave one
                # more server on a stream of its own for good.
                continue
            # Its process runs but its files cannot be read: a container whose fresh reads keep failing is
            # left to the engine's stream.
            failures = self._failures[internal_id] = self._failures.get(internal_id, 0) + 1
            if failures >= FAILURES_BEFORE_FALLBACK:
                log.warning("%s: cgroup files unreadable; falling back to the engine's stats stream", internal_id)
                self._unreadable.add(internal_id)
                del out[internal_id]
        return out

    @staticmethod
    def _read_round(reader: CgroupReader, reading: dict[str, CgroupTarget]) -> tuple[
            dict[str, StatsSample | None], set[str]]:
        """In the worker thread: the samples, and the containers not read whose init process has ended."""
        read = reader.sample_many(reading)
        proc = reader.layout.proc
        ended = {i for i, sample in read.items() if sample is None and not (proc / str(reading[i].pid)).exists()}
        return read, ended

    async def _inspect(self, internal_id: str) -> CgroupTarget | None:
        try:
            doc = await self.client.inspect_container(self.name_of(internal_id))
        except LightdError as exc:
            log.debug("%s: inspect for stats: %s", internal_id, exc)
            return None
        state = (doc or {}).get("State") or {}
        pid = int(state.get("Pid") or 0)
        if doc is None or not state.get("Running") or pid <= 0:
            return None
        return CgroupTarget(doc["Id"], (doc.get("HostConfig") or {}).get("CgroupParent") or "", pid)
