"""Power actions of one server: PowerLock (one at a time; a busy lock is a 409, never a silent drop), the
stop sequence, and the bodies of the owned tasks that run them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lightd.errors import DockerUnavailable, LightdError, NotFound, PowerActionInProgress
from lightd.servers.pause import PAUSE_ACTIONS, thaw_for_stop
from lightd.servers.state import OFFLINE

if TYPE_CHECKING:
    from lightd.servers.server import Server

log = logging.getLogger(__name__)

POWER_ACTIONS = ("start", "stop", "restart", "kill", "pause", "unpause")

LOCK_WAIT_SECONDS = 2.0
"""How long an action asked for over an API waits for the one in progress to end before it is refused (409).
What an action ends in shows a moment before its lock is free: a start's `running` is read on the console
while the engine's answer to the start is still on its way, and a stop's `offline` is stored before the stop
returns. A panel that acts on what it sees must not be refused for that moment (Wings' "wait a bounded
time"); an action that is really under way (a pull, an install, a restore) is still refused."""


class PowerLock:
    """Held for the whole of a start, stop, restart, pause, unpause, reinstall or rebind. Kill does not take it.

    The event loop is single-threaded and `try_acquire` does not await, so a plain field is the lock.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.action: str | None = None
        self._free = asyncio.Event()
        self._free.set()

    def try_acquire(self, action: str) -> None:
        """Take the lock now or raise PowerActionInProgress naming the action in progress."""
        if self.action is not None:
            raise PowerActionInProgress(f"another power action ({self.action}) is in progress for {self.server}")
        self.action = action
        self._free.clear()

    async def wait_free(self, timeout: float = LOCK_WAIT_SECONDS) -> None:
        """Wait at most `timeout` seconds for the action in progress to end (every action asked for over an
        API waits `LOCK_WAIT_SECONDS`, through `wait_for_lock`; a front end whose foreign original queues a
        change behind the one in progress waits longer). It takes nothing: check the state and read what the
        change is based on after this, then take the lock without awaiting in between."""
        if self.action is None:
            return
        try:
            async with asyncio.timeout(timeout):
                while self.action is not None:
                    await self._free.wait()
        except TimeoutError:
            pass

    def release(self) -> None:
        self.action = None
        self._free.set()

    @contextmanager
    def taken(self, action: str) -> Iterator[None]:
        """Take the lock for an action its block hands to a task (which releases it); released here if the
        block fails before that, so that a refused setup never leaves it held."""
        self.try_acquire(action)
        try:
            yield
        except BaseException:
            self.release()
            raise

    @property
    def locked(self) -> bool:
        return self.action is not None


async def wait_for_lock(server: Server, check: Callable[[], None]) -> None:
    """An action that found another holding `server`'s lock waits (bounded: `LOCK_WAIT_SECONDS`) for it to
    end, then is checked again against what that ended in: `check` (the state) and whether the server was
    deleted meanwhile (a delete takes no lock). It returns without yielding when the lock is free: take it
    next, with no await in between."""
    if not server.lock.locked:
        return
    await server.lock.wait_free()
    if server.deleted:
        raise NotFound(f"container {server.id} not found")
    check()


async def stop_server(server: Server, timeout: float | None = None) -> None:
    """Stop command or signal, wait up to `timeout`, then SIGKILL. A stop that fails (the engine away)
    leaves the server shown as what it is: running, or paused (`Server.stop_failed`). A paused server is
    thawed first: a frozen process handles no stop command."""
    if server.state == OFFLINE:
        return
    timeout = server.config.servers.stop_timeout_seconds if timeout is None else timeout
    await server.begin_stop()
    try:
        await thaw_for_stop(server)
        await _ask_to_stop(server)
        if not await server.wait_exit(timeout):
            server.daemon_message(f"Server did not stop within {timeout:g}s; killing it")
            await server.kill()
    except Exception:
        await server.stop_failed()
        raise


async def _ask_to_stop(server: Server) -> None:
    """Send the stop command or signal. An engine error is left to the kill after the timeout, unless the
    engine is away (then the kill would fail too)."""
    stop = server.spec.stop
    try:
        if stop.type == "command" and server.attached:
            await server.write_stdin(stop.value)
        else:
            await server.env.signal(server.id, stop.value if stop.type == "signal" else "SIGTERM")
    except DockerUnavailable:
        raise
    except LightdError as exc:
        log.warning("%s: graceful stop failed (%s); killing", server.id, exc)


async def run_kill(server: Server) -> LightdError | None:
    """Kill the server. A failure is published (`Server.report_failure`) and returned, never raised into
    the task's owner."""
    try:
        await server.kill()
    except LightdError as exc:
        server.report_failure("kill", exc)
        return exc
    return None


async def run_locked(server: Server, action: str, timeout: float | None) -> LightdError | None:
    """Run a start, stop, restart, pause or unpause whose lock the caller took, and release it. A failure is
    published (`Server.report_failure`) and returned, never raised into the task's owner."""
    try:
        if action in PAUSE_ACTIONS:
            await PAUSE_ACTIONS[action](server)
        if action in ("stop", "restart"):
            await stop_server(server, timeout)
        if action in ("start", "restart"):
            await server.start()
    except LightdError as exc:
        server.report_failure(action, exc)
        return exc
    finally:
        server.lock.release()
    return None


async def restart_after_crash(server: Server) -> None:
    """Start a server that crashed, unless another action already holds its lock. A failure is published
    like any start's (a mount through a link, the disk limit), never raised into the task's owner."""
    try:
        server.lock.try_acquire("start")
    except PowerActionInProgress:
        return
    try:
        server.daemon_message("Restarting the server after a crash")
        await server.start()
    except LightdError as exc:
        server.report_failure("start", exc)
    finally:
        server.lock.release()
