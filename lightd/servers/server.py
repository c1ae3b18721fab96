"""Server: one lightd container — its states, console, power actions and exit handling."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from lightd.config import Config
from lightd.errors import Conflict, DockerUnavailable, LightdError
from lightd.events import EventBus
from lightd.servers.console import (
    ConsoleHistory, ConsoleOutput, LineSplitter, OutputThrottle, StartPattern, StartTimeout,
)
from lightd.servers.entrypoint import write_entrypoint
from lightd.servers.listing import ChangeCount
from lightd.servers.environment import ConsoleStream, Environment, StatsSample
from lightd.servers.events import (
    ActionFailed, ConsoleDetached, InstallFailed, InstallStateChanged, ServerCrashed, ServerEvent, ServerExited,
    StartTimedOut, StateChanged,
)
from lightd.servers.models import ContainerSpec, load_stored_spec
from lightd.servers.power import PowerLock, restart_after_crash
from lightd.servers.preflight import Preflight
from lightd.servers.state import ACCEPTS_COMMANDS, FAILED, OFFLINE, PAUSED, RUNNING, STARTING, STOPPING, ServerStates
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.timers import TimerWheel

log = logging.getLogger(__name__)


class Server:
    """One server. Power methods assume the caller holds `lock` (kill excepted)."""

    def __init__(
        self, record: dict[str, Any], *, env: Environment, store: Store, events: EventBus, tasks: TaskOwner,
        timers: TimerWheel, config: Config, volume_path: Path, data_path: Path, preflight: Preflight,
        changes: ChangeCount,
    ) -> None:
        self.id: str = record["internal_id"]
        self.record = record
        self.spec, dropped = load_stored_spec(record["spec"])
        if dropped:
            log.warning("%s: stored %s no longer valid; ignored until the server is changed", self.id, ", ".join(dropped))
        # The last states announced (stored): what recovery compares the engine with, so that only
        # transitions that really happened while the daemon was away are announced.
        self.states = ServerStates(self.id, record.get("state") or OFFLINE, record["install_state"])
        self.env = env
        self.store = store
        self.events = events
        self.tasks = tasks
        self.timers = timers
        self.config = config
        self.volume_path = volume_path
        self.data_path = data_path
        self.preflight = preflight
        self.lock = PowerLock(self.id)
        self.history = ConsoleHistory(config.console.history_lines, config.console.history_bytes)
        self.throttle = OutputThrottle(config.console.throttle_lines, config.console.throttle_window_ms)
        self.output = ConsoleOutput(self.id, events, self.history, self.throttle, self.daemon_message)
        # The node's count of changes to what the listing shows (servers/listing.py: ChangeCount).
        self.changes = changes
        self._container_missing = False
        self.started_at: float | None = None
        self.last_crash_at: float | None = record.get("last_crash_at")
        self.latest_stats: StatsSample | None = None
        self.deleted = False
        self.install_task: asyncio.Task[Any] | None = None
        self._pattern: StartPattern | None = None
        self._start_timeout = StartTimeout(timers, f"start-timeout:{self.id}")
        self.use_spec(self.spec)
        self._console: ConsoleStream | None = None
        self._abandoned: ConsoleStream | None = None  # attached for a start the engine refused
        self.stream_ending = False  # between the end of a console stream and the handling of the exit
        self._expect_exit = False
        # The engine's answer to a start is on its way; a kill then is carried out when it arrives.
        self._start_pending = False
        self._kill_on_start = False
        self._exited = asyncio.Event()
        self._exited.set()
        self._write_lock = asyncio.Lock()

    def use_spec(self, spec: ContainerSpec) -> None:
        """Take a new spec (the object stays: sockets and the lock hold it); its start pattern with it."""
        self.spec = spec
        self._pattern = StartPattern(spec.start_pattern) if spec.start_pattern else None

    @property
    def state(self) -> str:
        """The runtime state: offline, starting, running, stopping or paused."""
        return self.states.run

    @property
    def install_state(self) -> str:
        """The install state: installing, ready or failed."""
        return self.states.install

    @property
    def container_missing(self) -> bool:
        """Installed, but the engine has no container for it (shown in the view)."""
        return self._container_missing

    @container_missing.setter
    def container_missing(self, missing: bool) -> None:
        if missing != self._container_missing:
            self._container_missing = missing
            self.changes.bump()

    # -- publishing ----------------------------------------------------------------------------------
    def publish(self, event: ServerEvent) -> None:
        self.events.publish("event", self.id, event)

    def daemon_message(self, text: str) -> None:
        self.events.publish("daemon_message", self.id, text)

    def report_failure(self, action: str, exc: LightdError) -> None:
        """An accepted action that failed: logged, an `error` event (a `<action>_failed` panel update) and a
        console notice."""
        log.warning("%s: %s failed: %s", self.id, action, exc)
        self.publish(ActionFailed(str(exc), action))
        self.daemon_message(f"{action} failed: {exc}")

    async def set_state(self, state: str) -> None:
        """Move the runtime state (see `state.TRANSITIONS`), persist it and announce it."""
        if self.states.move(state):
            if state != STARTING:
                self._start_timeout.cancel()  # the start is over: its timer goes
            self.changes.bump()  # the view shows the new state before the store has it
            await self.persist(state=state)
            self.publish(StateChanged(state))

    async def set_install_state(self, state: str, error: str | None = None, *, announce: bool = True) -> None:
        """Move the install state (see `state.TRANSITIONS`), persist it and, with `announce`, announce it."""
        if not self.states.move(state):
            return
        await self.persist(install_state=state, install_error=error)
        if announce:
            self.publish(InstallFailed(error) if state == FAILED else InstallStateChanged(state))

    async def persist(self, **fields: Any) -> None:
        """Write fields of this server's record to the store and to the in-memory copy reads are served from."""
        await self.store.update_container(self.id, **fields)
        self.record.update(fields, updated_at=time.time())
        self.changes.bump()

    def runtime(self) -> dict[str, Any]:
        return {"state": self.state, "docker_name": self.env.name_of(self.id), "container_missing": self.container_missing}

    def uptime_ms(self) -> int:
        if self.started_at is None or self.state == OFFLINE:
            return 0
        return int((time.time() - self.started_at) * 1000)

    # -- power ---------------------------------------------------------------------------------------
    async def write_entrypoint(self) -> None:
        await asyncio.to_thread(write_entrypoint, self.data_path)

    async def start(self) -> None:
        """Attach to the output, then start; `running` on the first line matching the start pattern."""
        self.states.check_can_start()
        status = await self.env.status(self.id)
        if status.running:
            await self.reattach(paused=status.paused)
            return
        await self.preflight.before_start(self, status)  # the inspect above, not a second one
        if not status.exists:
            await self.write_entrypoint()
            await self.env.create(self.spec, self.volume_path, self.data_path)
            self.container_missing = False
        console = await self.env.attach(self.id)
        self._expect_exit = False
        self._exited.clear()
        self.throttle.reset()
        await self.set_state(STARTING)
        self._watch(console)
        self._kill_on_start = False
        self._start_pending = True
        try:
            await self.env.start(self.id)
        except LightdError as exc:
            if not (isinstance(exc, DockerUnavailable) and await self._runs_anyway()):
                await self._abandon_start(console)
                raise  # reported once, by the action that started it (`report_failure`)
        finally:
            self._start_pending = False
        self.started_at = time.time()
        if self._kill_on_start:
            await self._kill_after_start()
            return
        if self._pattern is None and self.state == STARTING:
            await self.set_state(RUNNING)
        elif self.spec.start_timeout_seconds and self.state == STARTING:
            self._arm_start_timeout(self.spec.start_timeout_seconds)

    async def _kill_after_start(self) -> None:
        """A kill came while the engine's answer to the start was on its way (a kill then finds nothing
        running): carried out now that the container runs."""
        self._kill_on_start = False
        try:
            await self.env.signal(self.id, "SIGKILL")
        except LightdError as exc:
            log.warning("%s: the kill asked for during the start failed: %s", self.id, exc)

    async def _runs_anyway(self) -> bool:
        """The engine's answer to a start was lost: whether it started the container all the same."""
        try:
            return (await self.env.status(self.id)).running
        except LightdError:
            return False

    async def _abandon_start(self, console: ConsoleStream) -> None:
        """The engine refused the start: the process never ran, so there is no exit to report or to wait
        for (the engine may be gone). Close the console attached for it (its end is not handled) and go
        back offline."""
        self._expect_exit = True  # a start that never happened is not a crash
        self._abandoned = console
        if self._console is console:
            self._console = None
        self._exited.set()
        await console.close()
        await self.set_state(OFFLINE)

    def _arm_start_timeout(self, seconds: float) -> None:
        """Report this start (its `started_at`) if still unmatched after `seconds`."""
        started = self.started_at
        self._start_timeout.arm(seconds, lambda: self._start_timed_out(seconds, started))

    def _start_timed_out(self, seconds: float, started: float | None) -> None:
        if self.state == STARTING and self.started_at == started:
            # Reported, not acted on: a slow server is not killed for it.
            self.publish(StartTimedOut(seconds))
            self.daemon_message(f"Server has not matched its start pattern after {seconds:g}s")

    async def begin_stop(self) -> None:
        """Enter `stopping` (the exit that follows is requested, not a crash); the sequence is
        `power.stop_server`."""
        if self.state != OFFLINE:
            self._expect_exit = True
            await self.set_state(STOPPING)

    async def stop_failed(self) -> None:
        """A stop failed before its exit was seen: the process runs on, so it is shown running (paused if it
        was never thawed; an exit after this is a crash again)."""
        if self.state == STOPPING and not self._exited.is_set():
            self._expect_exit = False
            await self.set_state(PAUSED if self.states.frozen else RUNNING)

    async def wait_exit(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process's exit to be handled; False if it was not."""
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def kill(self) -> None:
        """SIGKILL now (while the engine's answer to a start is on its way, as soon as it arrives); always
        allowed, whatever action holds the lock."""
        if self.state == OFFLINE and self._exited.is_set():
            raise Conflict(f"server {self.id} is not running")
        expected, self._expect_exit = self._expect_exit, True
        if self._start_pending:
            self._kill_on_start = True  # the start carries it out as soon as the engine has answered
        else:
            try:
                await self.env.signal(self.id, "SIGKILL")
            except Exception:
                self._expect_exit = expected  # it runs on: an exit is what it was before the kill
                raise
        if not await self.wait_exit(30):
            log.warning("%s: no exit seen 30s after SIGKILL", self.id)

    async def send_command(self, command: str) -> None:
        """Write one line to the server's stdin (409 unless starting or running)."""
        if self.state not in ACCEPTS_COMMANDS or self._console is None:
            raise Conflict(f"server {self.id} is not running")
        stopping = self.spec.stop.type == "command" and command.strip() == self.spec.stop.value
        if stopping:  # the user typed the stop command: the exit that follows is not a crash
            await self.begin_stop()
        try:
            await self.write_stdin(command)
        except Exception:
            if stopping:
                await self.stop_failed()
            raise

    async def write_stdin(self, command: str) -> None:
        """Write one line to the attached console."""
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
        return (self.state != OFFLINE and self._console is None and not self.stream_ending
                and not self.lock.locked and not self.deleted)

    async def reattach(self, paused: bool = False) -> None:
        """Attach to a container that is already running (daemon restart, engine back), or `paused`; announce
        a state only if it differs from the last one announced."""
        try:
            self.history.clear()
            self.history.extend(await self.env.tail_logs(self.id, self.config.console.history_lines))
        except LightdError as exc:
            log.warning("%s: could not read back the log: %s", self.id, exc)
        console = await self.env.attach(self.id)
        self._expect_exit = False
        self._exited.clear()
        starting = self.state == STARTING and self._pattern is not None and not any(
            self._pattern.search(line) for line in self.history.tail(self.config.console.history_lines))
        # A stop that was under way when the daemon went away ended with it: the server is running.
        await self.set_state(PAUSED if paused else STARTING if starting else RUNNING)
        self.states.resume_to = STARTING if starting else RUNNING
        if self.started_at is None:
            self.started_at = time.time()
        self._watch(console)

    async def exited_while_away(self, exit_code: int | None, oom_killed: bool) -> None:
        """The container stopped while nobody watched (daemon down, engine away): handle that exit as if
        it had been seen — a crash with its real exit code unless a stop had been asked for."""
        self._expect_exit = self.state == STOPPING
        self._exited.clear()
        if exit_code is None:  # the container itself is gone: no exit to report
            self.daemon_message("The server's container disappeared while the daemon was away")
            await self.set_state(OFFLINE)
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
        if console is self._abandoned:
            return  # the start was refused: nothing ran, nothing ended
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
        if self.state == STARTING and self._pattern is not None:
            index = await self._pattern.first_match(lines)  # may yield: the state is checked again
            if index >= 0 and self.state == STARTING:
                # The lines before the match go out first, then `running`, then the rest.
                self.output.publish(lines[:index])
                await self.set_state(RUNNING)
                lines = lines[index:]
        self.output.publish(lines)

    async def _on_stream_end(self) -> None:
        try:
            status = await self.env.status(self.id)
        except LightdError:
            # The engine went away (or failed to answer); the container may still run. The engine
            # monitor re-attaches it.
            self.daemon_message("Lost the connection to the Docker engine; reconnecting when it is back")
            self.publish(ConsoleDetached())
            return
        if status.running and not self.deleted:
            log.info("%s: console stream ended while running; re-attaching", self.id)
            console = await self.env.attach(self.id)
            self._watch(console)
            return
        await self._handle_exit(status.exit_code if status.exit_code is not None else -1, status.oom_killed)

    async def _handle_exit(self, exit_code: int, oom_killed: bool) -> None:
        expected = self._expect_exit or self.state == STOPPING
        crashed = not expected and self.state in (STARTING, RUNNING, PAUSED)
        self.started_at = None
        self.latest_stats = None
        await self.persist(exit_code=exit_code, oom_killed=oom_killed)
        self.publish(ServerExited(exit_code, oom_killed))
        restart = False
        if crashed and not self.deleted:
            now = time.time()
            guard = self.config.servers.crash_restart_guard_seconds
            recent = self.last_crash_at is not None and now - self.last_crash_at < guard
            self.publish(ServerCrashed(exit_code, oom_killed))
            self.daemon_message(
                f"Server crashed: exit code {exit_code}" + (" (out of memory)" if oom_killed else "")
            )
            self.last_crash_at = now
            await self.persist(last_crash_at=now)
            restart = self.spec.restart_on_crash and not recent
            if self.spec.restart_on_crash and recent:
                self.daemon_message(f"Not restarting: the previous crash was less than {guard:g}s ago")
        if not self.deleted:
            await self.set_state(OFFLINE)
        self._exited.set()
        if restart:
            self.tasks.spawn(restart_after_crash(self), name=f"crash-restart:{self.id}")
