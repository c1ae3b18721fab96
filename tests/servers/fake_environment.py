"""FakeEnvironment: the `Environment` protocol in memory, for fast unit tests of the server domain.

Passed to a real `ServerManager` in place of `DockerEnvironment`. Containers are records in a dict; the
test drives them (`print` a console line, `exit` with a code) and can make any method fail on its next
call(s) with a given lightd error (`fail_next("start", DockerUnavailable(...))`) or wait until released
(`hold("signal")`). Semantics follow lightd/docker/environment.py: `create` replaces the container,
`remove` and a signal to a stopped container are not errors, a missing container is NotFound; a paused
container's console stays open, pause/unpause in the wrong state is Conflict, and a signal thaws it (as
Docker does).
"""

from __future__ import annotations

import asyncio
import signal as signals
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightd.errors import Conflict, LightdError, NotFound
from lightd.servers.environment import ContainerStatus, LimitsUpdate, StatsSample
from lightd.servers.models import ContainerSpec, Limits


class FakeConsole:
    """A console stream: output the test pushes, stdin it records; ends at the container's exit."""

    def __init__(self, env: FakeEnvironment, internal_id: str) -> None:
        self._env = env
        self._id = internal_id
        self._output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def push(self, chunk: bytes | None) -> None:
        self._output.put_nowait(chunk)

    async def read(self) -> bytes | None:
        if self.closed:
            return None
        return await self._output.get()

    async def write(self, data: bytes) -> None:
        await self._env.step("write")
        self._env.containers[self._id].stdin.append(data)

    async def close(self) -> None:
        self.closed = True
        self._output.put_nowait(None)  # wakes a pending read


@dataclass
class FakeContainer:
    spec: ContainerSpec
    running: bool = False
    paused: bool = False
    exit_code: int = 0
    oom_killed: bool = False
    started_at: str | None = None
    ignored_signals: set[str] = field(default_factory=set)
    logs: list[str] = field(default_factory=list)
    stdin: list[bytes] = field(default_factory=list)
    consoles: list[FakeConsole] = field(default_factory=list)

    def end_streams(self) -> None:
        for console in self.consoles:
            console.push(None)
        self.consoles.clear()


class FakeEnvironment:
    """Servers as in-memory containers, driven by the test."""

    def __init__(self) -> None:
        self.up = True
        self.containers: dict[str, FakeContainer] = {}
        self.images: set[str] = set()
        self.install_exit_code = 0
        self.install_output = b"installing\n"
        self.calls: list[str] = []
        self.signals: list[tuple[str, str]] = []
        self._failures: dict[str, list[LightdError | None]] = {}
        self._gates: dict[str, asyncio.Event] = {}

    # -- test controls ------------------------------------------------------------------------------
    def fail_next(self, method: str, error: LightdError, times: int = 1, after: int = 0) -> None:
        """`times` calls of `method`, once `after` more calls have passed, raise `error` (after any pause)."""
        self._failures[method] = [None] * after + [error] * times

    def hold(self, method: str) -> asyncio.Event:
        """The next call of `method` waits until the returned event is set."""
        gate = self._gates[method] = asyncio.Event()
        return gate

    def print(self, internal_id: str, line: str) -> None:
        """The container writes one line to its output."""
        container = self.containers[internal_id]
        container.logs.append(line)
        for console in container.consoles:
            console.push(line.encode() + b"\n")

    def exit(self, internal_id: str, code: int, oom: bool = False) -> None:
        """The container's process ends (by itself: a crash, or after a stop command)."""
        container = self.containers[internal_id]
        container.running = container.paused = False
        container.exit_code = code
        container.oom_killed = oom
        container.end_streams()

    def ignore(self, internal_id: str, *names: str) -> None:
        """The container's process ignores these signals (SIGKILL cannot be ignored)."""
        self.containers[internal_id].ignored_signals.update(names)

    async def step(self, method: str) -> None:
        """Every call goes through here: recorded, paused if asked, failed if asked."""
        self.calls.append(method)
        gate = self._gates.pop(method, None)
        if gate is not None:
            await gate.wait()
        pending = self._failures.get(method)
        if pending and (error := pending.pop(0)) is not None:
            raise error

    def _get(self, internal_id: str) -> FakeContainer:
        container = self.containers.get(internal_id)
        if container is None:
            raise NotFound(f"no such container: {self.name_of(internal_id)}")
        return container

    # -- the Environment protocol -------------------------------------------------------------------
    def name_of(self, internal_id: str) -> str:
        return f"fake-{internal_id}"

    async def available(self) -> bool:
        await self.step("available")
        return self.up

    async def ensure_image(self, image: str, on_progress: Callable[[dict[str, Any]], None]) -> bool:
        await self.step("ensure_image")
        if image in self.images:
            return False
        on_progress({"status": "Pulling fs layer", "id": "layer"})
        self.images.add(image)
        return True

    async def create(self, spec: ContainerSpec, volume_path: Path, data_path: Path) -> str:
        await self.step("create")
        old = self.containers.pop(spec.internal_id, None)
        if old is not None:  # docker rm -f, then create
            old.running = False
            old.end_streams()
        self.containers[spec.internal_id] = FakeContainer(spec)
        return self.name_of(spec.internal_id)

    async def is_current(self, spec: ContainerSpec, volume_path: Path, data_path: Path,
                         status: ContainerStatus | None = None) -> bool:
        await self.step("is_current")
        container = self.containers.get(spec.internal_id)
        return container is None or container.spec == spec

    async def update_limits(self, internal_id: str, limits: Limits) -> LimitsUpdate:
        await self.step("update_limits")
        container = self._get(internal_id)
        container.spec = container.spec.model_copy(update={"limits": limits})
        return LimitsUpdate(applied=tuple(k for k in ("memory", "cpu", "pids") if getattr(limits, k)))

    async def remove(self, internal_id: str) -> None:
        await self.step("remove")
        container = self.containers.pop(internal_id, None)
        if container is not None:
            container.running = False
            container.end_streams()

    async def remove_leftovers(self, known: set[str]) -> list[str]:
        await self.step("remove_leftovers")
        gone = [i for i in self.containers if i not in known]
        for internal_id in gone:
            self.containers.pop(internal_id).end_streams()
        return [self.name_of(i) for i in gone]

    async def status(self, internal_id: str) -> ContainerStatus:
        await self.step("status")
        container = self.containers.get(internal_id)
        if container is None:
            return ContainerStatus(exists=False)
        return ContainerStatus(exists=True, running=container.running, paused=container.paused,
                               exit_code=container.exit_code, oom_killed=container.oom_killed,
                               started_at=container.started_at)

    async def statuses(self) -> dict[str, ContainerStatus]:
        await self.step("statuses")
        return {i: ContainerStatus(exists=True, running=c.running, paused=c.paused) for i, c in self.containers.items()}

    async def attach(self, internal_id: str) -> FakeConsole:
        await self.step("attach")
        container = self._get(internal_id)
        console = FakeConsole(self, internal_id)
        container.consoles.append(console)
        return console

    async def start(self, internal_id: str) -> None:
        await self.step("start")
        container = self._get(internal_id)
        if not container.running:
            container.running = True
            container.exit_code = 0
            container.oom_killed = False
            container.started_at = "2024-01-01T00:00:00Z"

    async def signal(self, internal_id: str, signal: str) -> None:
        await self.step("signal")
        container = self._get(internal_id)
        self.signals.append((internal_id, signal))
        container.paused = False  # Docker thaws a paused container to deliver a signal
        if container.running and (signal == "SIGKILL" or signal not in container.ignored_signals):
            self.exit(internal_id, 128 + signals.Signals[signal].value)

    async def pause(self, internal_id: str) -> None:
        await self.step("pause")
        container = self._get(internal_id)
        if not container.running or container.paused:
            raise Conflict(f"container {self.name_of(internal_id)} is not running or already paused")
        container.paused = True

    async def unpause(self, internal_id: str) -> None:
        await self.step("unpause")
        container = self._get(internal_id)
        if not container.paused:
            raise Conflict(f"container {self.name_of(internal_id)} is not paused")
        container.paused = False

    async def tail_logs(self, internal_id: str, lines: int) -> list[str]:
        await self.step("tail_logs")
        return self._get(internal_id).logs[-lines:]

    async def run_install(
        self, spec: ContainerSpec, volume_path: Path, data_path: Path, on_output: Callable[[bytes], None]
    ) -> int:
        await self.step("run_install")
        on_output(self.install_output)
        return self.install_exit_code

    async def stats(self, internal_id: str) -> AsyncIterator[StatsSample]:
        await self.step("stats")
        self._get(internal_id)
        yield StatsSample(memory_bytes=0, memory_limit_bytes=0, cpu_absolute=0.0, rx_bytes=0, tx_bytes=0)

    async def sample_stats(self, internal_ids: Collection[str], *, spread: float = 0.0) -> dict[str, StatsSample | None]:
        """Zeros for every running container, None for the others; a missing one is left out (the stream)."""
        await self.step("sample_stats")
        zero = StatsSample(memory_bytes=0, memory_limit_bytes=0, cpu_absolute=0.0, rx_bytes=0, tx_bytes=0)
        return {i: (zero if self.containers[i].running else None) for i in internal_ids if i in self.containers}

    def stats_source(self) -> str:
        return "fake"

    async def exec(self, internal_id: str, cmd: list[str], stdin: bytes | None = None) -> tuple[int, str]:
        await self.step("exec")
        self._get(internal_id)
        return 0, ""

    async def addresses(self, internal_id: str) -> tuple[str | None, str | None]:
        await self.step("addresses")
        return None, None

    async def engine_info(self) -> dict[str, Any]:
        await self.step("engine_info")
        return {"Architecture": "x86_64"}

    async def engine_version(self) -> dict[str, Any]:
        await self.step("engine_version")
        return {"Version": "fake", "ApiVersion": "1.43"}

    async def list_images(self) -> list[dict[str, Any]]:
        await self.step("list_images")
        return [{"RepoTags": [image]} for image in sorted(self.images)]

    async def image_exists(self, image: str) -> bool:
        await self.step("image_exists")
        return image in self.images

    async def network_exists(self, name: str) -> bool:
        await self.step("network_exists")
        return True
