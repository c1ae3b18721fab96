"""The Environment protocol: what the server domain needs from a container runtime. The domain owns this
interface; lightd/docker/environment.py implements it on a Docker engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lightd.servers.models import ContainerSpec, Limits


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    exists: bool
    running: bool = False
    paused: bool = False  # frozen by the engine (`running` stays True)
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str | None = None
    fingerprint: tuple[Any, ...] | None = None  # what it was made from, for `is_current` (an inspect's only)


@dataclass(frozen=True, slots=True)
class LimitsUpdate:
    """What an in-place limits update did: the limits (memory, cpu, pids) now in force, the engine's warnings."""

    applied: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatsSample:
    memory_bytes: int
    memory_limit_bytes: int
    cpu_absolute: float
    rx_bytes: int
    tx_bytes: int
    pids: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0


# The engine's own events about a server's container (one class per kind, matched by type).
@dataclass(frozen=True, slots=True)
class ContainerStarted:
    internal_id: str
    time: float


@dataclass(frozen=True, slots=True)
class ContainerDied:
    """The container's process ended; `exit_code` as the engine reported it (None if it did not)."""

    internal_id: str
    exit_code: int | None
    time: float


@dataclass(frozen=True, slots=True)
class ContainerOomKilled:
    """The kernel's OOM killer struck in the container (a `ContainerDied` follows if its main process died)."""

    internal_id: str
    time: float


@dataclass(frozen=True, slots=True)
class ContainerPaused:
    """The engine froze the container's processes (lightd's pause or a `docker pause` outside it)."""

    internal_id: str
    time: float


@dataclass(frozen=True, slots=True)
class ContainerUnpaused:
    internal_id: str
    time: float


@dataclass(frozen=True, slots=True)
class ContainerDestroyed:
    internal_id: str
    time: float


@dataclass(frozen=True, slots=True)
class EventStreamUp:
    """The event stream is (re)connected: what happened while it was down was not seen."""


@dataclass(frozen=True, slots=True)
class EventStreamDown:
    reason: str


ContainerEvent = (ContainerStarted | ContainerDied | ContainerOomKilled | ContainerDestroyed | ContainerPaused
                  | ContainerUnpaused)
EngineEvent = ContainerEvent | EventStreamUp | EventStreamDown


class ConsoleStream(Protocol):
    """A live attachment to a container's stdin and output."""

    async def read(self) -> bytes | None:
        """The next output chunk (stdout and stderr interleaved), None at end of stream."""

    async def write(self, data: bytes) -> None:
        """Write to the container's stdin."""

    async def close(self) -> None: ...


class EngineQueries(Protocol):
    """What the engine can be asked without changing anything: what front ends may use directly
    (`ServerManager.engine`). Every method raises lightd errors (DockerUnavailable, NotFound...)."""

    def name_of(self, internal_id: str) -> str:
        """The engine's name of the server's container."""

    async def available(self) -> bool: ...

    async def addresses(self, internal_id: str) -> tuple[str | None, str | None]:
        """The container's IPv4 and global IPv6 address on its network (None where it has none)."""

    async def engine_info(self) -> dict[str, Any]:
        """What the engine says of itself (architecture, versions...)."""

    async def engine_version(self) -> dict[str, Any]:
        """The engine's version, API version, OS and architecture."""

    async def list_images(self) -> list[dict[str, Any]]: ...

    async def image_exists(self, image: str) -> bool: ...

    async def network_exists(self, name: str) -> bool: ...


class Environment(EngineQueries, Protocol):
    """A place where servers run. Every method raises lightd errors (DockerUnavailable, NotFound...)."""

    async def ensure_image(self, image: str, on_progress: Callable[[dict[str, Any]], None]) -> bool:
        """Make `image` present, pulling it if missing; True when a pull happened."""

    async def create(self, spec: ContainerSpec, volume_path: Path, data_path: Path) -> str: ...

    async def is_current(self, spec: ContainerSpec, volume_path: Path, data_path: Path,
                         status: ContainerStatus | None = None) -> bool:
        """False when the server's container was made from something else than `spec` (it must be
        recreated before it starts); True when it matches or does not exist. `status`: what `status` said
        of it just now (it spares asking again)."""

    async def update_limits(self, internal_id: str, limits: Limits) -> LimitsUpdate:
        """Apply `limits` to the server's container in place, running or not; NotFound without one."""

    async def remove(self, internal_id: str) -> None:
        """Remove the server's containers (server, installer, anything else with its label)."""

    async def remove_leftovers(self, known: set[str]) -> list[str]:
        """Remove installer containers and containers of servers not in `known`; the names removed."""

    async def status(self, internal_id: str) -> ContainerStatus: ...

    async def statuses(self) -> dict[str, ContainerStatus]:
        """Every server container by internal id, in one query (Docker's list): whether it runs or is paused;
        a stopped one's `exit_code` is not known there (None: ask `status`)."""

    async def attach(self, internal_id: str) -> ConsoleStream: ...

    async def start(self, internal_id: str) -> None: ...

    async def signal(self, internal_id: str, signal: str) -> None:
        """Send `signal`; a paused container is thawed by the engine to receive it (Docker does)."""

    async def pause(self, internal_id: str) -> None:
        """Freeze every process of the running container (its console stays attached); Conflict unless running."""

    async def unpause(self, internal_id: str) -> None:
        """Let a paused container's processes run again; Conflict unless paused."""

    async def tail_logs(self, internal_id: str, lines: int) -> list[str]: ...

    async def run_install(
        self, spec: ContainerSpec, volume_path: Path, data_path: Path, on_output: Callable[[bytes], None]
    ) -> int:
        """Run the install script in a one-shot container; its exit code."""

    def stats(self, internal_id: str) -> AsyncIterator[StatsSample]:
        """The engine's own stream of samples of one container (the fallback of `sample_stats`)."""

    async def sample_stats(self, internal_ids: Collection[str], *, spread: float = 0.0) -> dict[str, StatsSample | None]:
        """One round of samples of running containers, read in one batch from the cheap source (cgroup
        files): a sample per id read, None for a container not running; an id left out cannot be read that
        way and is sampled from `stats` instead. Reads of many containers may be spread over `spread`
        seconds (in parts, so that no part holds the CPU long)."""

    def stats_source(self) -> str:
        """What `sample_stats` reads ("cgroup_v1", "cgroup_v2"), or "docker_stats" when it reads nothing."""

    async def exec(self, internal_id: str, cmd: list[str], stdin: bytes | None = None) -> tuple[int, str]: ...

    def events(self) -> AsyncIterator[EngineEvent]:
        """The engine's events about server containers, for as long as it is iterated. It reconnects by
        itself (an EventStreamDown, then an EventStreamUp once back) and never raises for the engine's absence."""
