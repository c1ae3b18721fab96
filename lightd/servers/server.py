"""Server: one lightd container — its states, console, power actions and exit handling."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from lightd.config import Config
from lightd.errors import Conflict, DockerUnavailable, LightdError, ServerInstalling
from lightd.events import EventBus
from lightd.servers.console import ConsoleHistory, LineSplitter, OutputThrottle, StartPattern
from lightd.servers.environment import ConsoleStream, Environment, StatsSample
from lightd.servers.models import ContainerSpec, load_stored_spec
from lightd.servers.power import PowerLock
from lightd.servers.preflight import Preflight
from lightd.store import Store
from lightd.tasks import TaskOwner

log = logging.getLogger(__name__)

THROTTLE_NOTICE = "Server is outputting console data too quickly -- throttling..."
ENTRYPOINT = """#!/bin/sh
# Written by lightd: runs the server's startup command from its volume.
cd /home/container || exit 1
exec /bin/sh -c "$STARTUP"
"""


class Server:
    """One server. Power methods assume the caller holds `lock` (kill excepted)."""

    def __init__(
        self, record: dict[str, Any], *, env: Environment, store: Store, events: EventBus, tasks: TaskOwner,
        config: Config, volume_path: Path, data_path: Path, preflight: Preflight,
    ) -> None:
        self.id: str = record["internal_id"]
        self.record = record
        self.spec, dropped = load_stored_spec(record["spec"])
        if dropped:
            log.warning("%s: stored %s no longer valid; ignored until the server is changed", self.id, ", ".join(dropped))
        self.install_state: str = record["install_state"]
        # The last state announced (stored): what recovery compares the engine with, so that only
        # transitions that really happened while the daemon was away are announced.
        self.state: str = record.get("state") or "offline"
        self.env = env
        self.store = store
        self.events = events
        self.tasks = tasks
        self.config = config
        self.volume_path = volume_path
        self.data_path = data_path
        self.preflight = preflight
        self.lock = PowerLock(self.id)
        self.history = ConsoleHistory(config.console.history_lines, config.console.history_bytes)
        self.throttle = OutputThrottle(config.console.throttle_lines, config.console.throttle_window_ms)
        self.container_missing = False
        self.started_at: float | None = None
        self.last_crash_at: float | None = record.get("last_crash_at")
        self.latest_stats: StatsSample | None = None
        self.deleted = False
        self.install_task: asyncio.Task[Any] | None = None
        self._pattern: StartPattern | None = None
        self.use_spec(self.spec)
        self._console: ConsoleStream | None = None
        self.stream_ending = False  # between the end of a console stream and the handling of the exit
        self._expect_exit = False
        self._exited = asyncio.Event()
        self._exited.set()
        self._write_lock = asyncio.Lock()

    def use_spec(self, spec: ContainerSpec) -> None:
        """Take a new spec (the object stays: sockets and the lock hold it); its start pattern with it."""
        self.spec = spec
        self._pattern = StartPattern(spec.start_pattern) if spec.start_pattern else None

    # -- publishing ----------------------------------------------------------------------------------
    def publish_event(self, event_type: str, **details: Any) -> None:
        self.events.publish("event", self.id, {"type": event_type, **details})

    def daemon_message(self, text: str) -> None:
        self.events.publish("daemon_message", self.id, text)

    def report_failure(self, action: str, exc: LightdError) -> None:
        """An accepted action that failed: logged, an `error` event (a `<action>_failed` panel update) and a
        console notice."""
        log.warning("%s: %s failed: %s", self.id, action, exc)
        self.publish_event("error", action=action, message=str(exc))
        self.daemon_message(f"{action} failed: {exc}")

    async def set_state(self, state: str) -> None:
        """Move the runtime state, persist it and announce it."""
        if state == self.state:
            return
        self.state = state
        await self.persist(state=state)
        self.publish_event(state)

    async def set_install_state(self, state: str, error: str | None = None) -> None:
        self.install_state = state
        await self.persist(install_state=state, install_error=error)
        if state == "failed":
            self.publish_event("failed", error=error)
        else:
            self.publish_event(state)

    async def persist(self, **fields: Any) -> None:
        """Write fields of this server's record to the store and to the in-memory copy reads are served from."""
        await self.store.update_container(self.id, **fields)
        self.record.update(fields, updated_at=time.time())

    def runtime(self) -> dict[str, Any]:
        return {"state": self.state, "docker_name": self.env.name_of(self.id), "container_missing": self.container_missing}

    def uptime_ms(self) -> int:
        if self.started_at is None or self.state == "offline":
            return 0
        return int((time.time() - self.started_at) * 1000)

    # -- preconditions (checked in the request, before a task is spawned) ---------------------------
    def check_ready(self) -> None:
        self.check_installed()
        if self.install_state != "ready":
            raise Conflict(f"server {self.id} is {self.install_state}, not ready")

    def check_can_start(self) -> None:
        self.check_ready()
        if self.state != "offline":
            raise Conflict(f"server {self.id} is already {self.state}")

    def check_installed(self) -> None:
        if self.install_state == "installing":
            raise ServerInstalling(f"server {self.id} is installing")

    # -- power ---------------------------------------------------------------------------------------
    async def write_entrypoint(self) -> None:
        def write() -> None:
            self.data_path.mkdir(parents=True, exist_ok=True)
            (self.data_path / "entrypoint.sh").write_text(ENTRYPOINT)
        await asyncio.to_thread(write)

    async def start(self) -> None:
        """Attach to the output, then start; `running` on the first line matching the start pattern."""
        self.check_can_start()
        status = await self.env.status(self.id)
        if status.running:
            await self.reattach()
            return
        await self.preflight.before_start(self)
        if not status.exists:
            await self.write_entrypoint()
            await self.env.create(self.spec, self.volume_path, self.data_path)
            self.container_missing = False
        console = await self.env.attach(self.id)
        self._expect_exit = False
        self._exited.clear()
        self.throttle.reset()
        await self.set_state("starting")
        self._watch(console)
        try:
            await self.env.start(self.id)
        except LightdError as exc:
            self._expect_exit = True  # a start that never happened is not a crash
            await console.close()
            self.publish_event("error", message=str(exc))
            await self._exited.wait()
            raise
        self.started_at = time.time()
        if self._pattern is None and self.state == "starting":
            await self.set_state("running")
        elif self.spec.start_timeout_seconds and self.state == "starting":
            self.tasks.spawn(self._start_timeout(self.spec.start_timeout_seconds), name=f"start-timeout:{self.id}")

    async def _start_timeout(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.state == "starting":
            # Reported, not acted on: a slow server is not killed for it.
            self.publish_event("start_timeout", seconds=seconds)
            self.daemon_message(f"Server has not matched its start pattern after {seconds:g}s")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop command or signal, wait up to `timeout`, then SIGKILL."""
        if self.state == "offline":
            return
        timeout = self.config.servers.stop_timeout_seconds if timeout is None else timeout
        await self.begin_stop()
        try:
            if self.spec.stop.type == "command" and self._console is not None:
                await self._write_stdin(self.spec.stop.value)
            else:
                signal = self.spec.stop.value if self.spec.stop.type == "signal" else "SIGTERM"
                await self.env.signal(self.id, signal)
        except DockerUnavailable:
            raise
        except LightdError as exc:
            log.warning("%s: graceful stop failed (%s); killing", self.id, exc)
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            self.daemon_message(f"Server did not stop within {timeout:g}s; killing it")
            await self.kill()

    async def begin_stop(self) -> None:
        """Enter `stopping` (the exit that follows is requested, not a crash)."""
        if self.state != "offline":
            self._expect_exit = True
            await self.set_state("stopping")

    async def kill(self) -> None:
        """SIGKILL now; always allowed, whatever action holds the lock."""
        if self.state == "offline" and self._exited.is_set():
            raise Conflict(f"server {self.id} is not running")
        self._expect_exit = True
        await self.env.signal(self.id, "SIGKILL")
        try:
            await asyncio.wait_for(self._exited.wait(), 30)
        except TimeoutError:
            log.warning("%s: no exit seen 30s after SIGKILL", self.id)

    async def restart(self, timeout: float | None = None) -> None:
        await self.stop(timeout)
        await self.start()

    async def send_command(self, command: str) -> None:
        """Write one line to the server's stdin (409 unless starting or running)."""
        if self.state not in ("starting", "running") or self._console is None:
            raise Conflict(f"server {self.id} is not running")
        if self.spec.stop.type == "command" and command.strip() == self.spec.stop.value:
            # The user typed the stop command: the exit that follows is not a crash.
            self._expect_exit = True
            await self.set_state("stopping")
        await self._write_stdin(command)

    async def _write_stdin(self, command: str) -> None:
        console = self._console
        if console is None:
            raise Conflict(f"server {self.id} has no console attached")
        async with self._write_lock:
            await console.write(command.encode() + b"\n")

    # -- console and exit ----------------------------------------------------------------------------
    def _watch(self, console: ConsoleStream) -> None:
        self._console = console
        self.tasks.spawn(self._read_console(console), name=f"console:{self.id}")

    @property
    def attached(self) -> bool:
        """A console stream is being read."""
        return self._console is not None

    @property
    def detached(self) -> bool:
        """Looks alive but no console is attached and nothing is dealing with it (the engine went away)."""
        return (self.state != "offline" and self._console is None and not self.stream_ending
                and not self.lock.locked and not self.deleted)

    async def reattach(self) -> None:
        """Attach to a container that is already running (daemon restart, engine back); announce a state
        only if it differs from the last one announced."""
        try:
            self.history.clear()
            self.history.extend(await self.env.tail_logs(self.id, self.config.console.history_lines))
        except LightdError as exc:
            log.warning("%s: could not read back the log: %s", self.id, exc)
        console = await self.env.attach(self.id)
        self._expect_exit = False
        self._exited.clear()
        starting = self.state == "starting" and self._pattern is not None and not any(
            self._pattern.search(line) for line in self.history.tail(self.config.console.history_lines))
        # A stop that was under way when the daemon went away ended with it: the server is running.
        await self.set_state("starting" if starting else "running")
        if self.started_at is None:
            self.started_at = time.time()
        self._watch(console)

    async def exited_while_away(self, exit_code: int | None, oom_killed: bool) -> None:
        """The container stopped while nobody watched (daemon down, engine away): handle that exit as if
        it had been seen — a crash with its real exit code unless a stop had been asked for."""
        self._expect_exit = self.state == "stopping"
        self._exited.clear()
        if exit_code is None:  # the container itself is gone: no exit to report
            self.daemon_message("The server's container disappeared while the daemon was away")
            await self.set_state("offline")
            self._exited.set()
            return
        await self._handle_exit(exit_code, oom_killed)

    async def _read_console(self, console: ConsoleStream) -> None:
        splitter = LineSplitter(self.config.console.line_max_bytes)
        try:
            while (chunk := await console.read()) is not None:
                await self._on_lines(splitter.feed(chunk))
                # A flood arrives faster than it is read, so the read above may never suspend: give the
                # loop to the API and the other servers once per chunk.
                await asyncio.sleep(0)
            await self._on_lines(splitter.flush())
        finally:
            await console.close()
            if self._console is console:
                self._console = None
        self.stream_ending = True
        try:
            await self._on_stream_end()
        finally:
            self.stream_ending = False

    async def _on_lines(self, lines: list[str]) -> None:
        """One chunk of output: start detection sees every line, then the throttle admits the first lines
        of the chunk that fit its budget; those go to the history and out as one event."""
        if not lines:
            return
        if self.state == "starting" and self._pattern is not None:
            index = await self._pattern.first_match(lines)  # may yield: the state is checked again
            if index >= 0 and self.state == "starting":
                # The lines before the match go out first, then `running`, then the rest.
                self._publish_lines(lines[:index])
                await self.set_state("running")
                lines = lines[index:]
        self._publish_lines(lines)

    def _publish_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        total = len(lines)
        admitted = self.throttle.admit_many(total)
        if admitted:
            if admitted < total:
                lines = lines[:admitted]
            self.history.extend(lines)
            self.events.publish("console", self.id, lines)
        if admitted < total and self.throttle.take_notice():
            self.daemon_message(THROTTLE_NOTICE)

    async def _on_stream_end(self) -> None:
        try:
            status = await self.env.status(self.id)
        except LightdError:
            # The engine went away (or failed to answer); the container may still run. The engine
            # monitor re-attaches it.
            self.daemon_message("Lost the connection to the Docker engine; reconnecting when it is back")
            self.publish_event("detached")
            return
        if status.running and not self.deleted:
            log.info("%s: console stream ended while running; re-attaching", self.id)
            console = await self.env.attach(self.id)
            self._watch(console)
            return
        await self._handle_exit(status.exit_code if status.exit_code is not None else -1, status.oom_killed)

    async def _handle_exit(self, exit_code: int, oom_killed: bool) -> None:
        expected = self._expect_exit or self.state == "stopping"
        crashed = not expected and self.state in ("starting", "running")
        self.started_at = None
        self.latest_stats = None
        await self.persist(exit_code=exit_code, oom_killed=oom_killed)
        self.publish_event("exit", exit_code=exit_code, oom_killed=oom_killed)
        restart = False
        if crashed and not self.deleted:
            now = time.time()
            guard = self.config.servers.crash_restart_guard_seconds
            recent = self.last_crash_at is not None and now - self.last_crash_at < guard
            self.publish_event("crashed", exit_code=exit_code, oom_killed=oom_killed)
            self.daemon_message(
                f"Server crashed: exit code {exit_code}" + (" (out of memory)" if oom_killed else "")
            )
            self.last_crash_at = now
            await self.persist(last_crash_at=now)
            restart = self.spec.restart_on_crash and not recent
            if self.spec.restart_on_crash and recent:
                self.daemon_message(f"Not restarting: the previous crash was less than {guard:g}s ago")
        if not self.deleted:
            await self.set_state("offline")
        self._exited.set()
        if restart:
            self.tasks.spawn(self._restart_after_crash(), name=f"crash-restart:{self.id}")

    async def _restart_after_crash(self) -> None:
        try:
            self.lock.try_acquire("start")
        except Conflict:
            return
        try:
            self.daemon_message("Restarting the server after a crash")
            await self.start()
        except LightdError as exc:
            # Refused like any start (a mount through a link, the disk limit): said, not raised into the owner.
            self.report_failure("start", exc)
        finally:
            self.lock.release()
