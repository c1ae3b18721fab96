"""Pause and unpause one server: the engine freezes its processes (Docker's cgroup freezer) and lets them run
again. Nothing ends: the console stays attached, the ports stay claimed, the stats go on (at no CPU). The
state is `paused` until an unpause — lightd's, or a `docker unpause` outside it — puts back the state the
pause interrupted (`ServerStates.resume_to`). A frozen process handles no stop command or signal, so a stop
thaws it first (`thaw_for_stop`); a kill needs nothing (the engine thaws a container to deliver it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lightd.errors import Conflict
from lightd.servers.environment import Environment
from lightd.servers.state import PAUSED, RUNNING, STARTING

if TYPE_CHECKING:
    from lightd.servers.server import Server


async def pause_server(server: Server) -> None:
    """Freeze the server's processes: `paused`. The caller holds the server's lock."""
    server.states.check_power("pause")
    await server.env.pause(server.id)
    await server.set_state(PAUSED)


async def unpause_server(server: Server) -> None:
    """Let the server's processes run again: back to `running` (or `starting`). The caller holds the lock."""
    server.states.check_power("unpause")
    try:
        await server.env.unpause(server.id)
    except Conflict:
        # Unpaused outside lightd and the event not handled yet: the engine agrees with what was asked.
        if (await server.env.status(server.id)).paused:
            raise
    await server.set_state(server.states.resume_to)


PAUSE_ACTIONS: dict[str, Callable[[Server], Awaitable[None]]] = {"pause": pause_server, "unpause": unpause_server}


async def thaw_for_stop(server: Server) -> None:
    """A stop begins while the server is frozen: unpause it so that it handles the stop command or signal
    (its state stays `stopping`). Docker thaws a container for a signal by itself, but not for a command
    written to stdin."""
    if not server.states.frozen:
        return
    try:
        await server.env.unpause(server.id)
    except Conflict:
        pass  # not paused any more (unpaused outside lightd, or it ended)
    server.states.thawed()


async def follow_engine_pause(server: Server, env: Environment) -> None:
    """A pause or unpause event from the engine (lightd's own, seen again, or a `docker pause` outside
    lightd): the state follows what the engine says now — the events may lag behind lightd's own actions.
    A server an action is dealing with is left to it (it sets the state itself)."""
    if server.lock.locked or server.deleted:
        return
    status = await env.status(server.id)
    if not status.running:
        return  # its exit is handled by the console stream
    if status.paused and server.state in (STARTING, RUNNING):
        await server.set_state(PAUSED)
    elif not status.paused and server.state == PAUSED:
        await server.set_state(server.states.resume_to)
    elif not status.paused:
        server.states.thawed()
