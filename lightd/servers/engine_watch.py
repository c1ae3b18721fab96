"""EngineWatch: crash detection and recovery driven by the engine's own event stream; the engine is polled
only while that stream is down. Comparing servers with the engine is `servers/recovery.py`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from lightd.errors import LightdError
from lightd.servers.environment import (
    ContainerDestroyed,
    ContainerEvent,
    ContainerPaused,
    ContainerUnpaused,
    Environment,
    EventStreamDown,
    EventStreamUp,
)
from lightd.servers.pause import follow_engine_pause

if TYPE_CHECKING:
    from lightd.servers.manager import ServerManager

log = logging.getLogger(__name__)


class EngineWatch:
    """Follows the engine's events about server containers; polls the engine every `poll_seconds` only
    while that stream is down."""

    def __init__(self, manager: ServerManager, env: Environment, poll_seconds: float) -> None:
        self._manager = manager
        self._env = env
        self._poll_seconds = poll_seconds
        # One reconcile at a time: two at once could both handle one exit (two crashes, two restarts).
        self._reconciling = asyncio.Lock()

    async def run(self) -> None:
        """Follow the stream and poll while it is down, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow(), name="engine-events")
                group.create_task(self._poll(), name="engine-poll")
        finally:
            self._manager.engine_events_up = False  # nothing follows the stream any more

    async def _reconcile(self) -> None:
        # The round at start-up is the one the stream's first connection runs: connected first, the stream sees
        # whatever happens after the round's list of containers (its events wait until the round is done).
        async with self._reconciling:
            await self._manager.reconcile()

    async def _follow(self) -> None:
        # Read one event at a time: while one is handled the next waits in the connection (no queue grows).
        async with contextlib.aclosing(self._env.events()) as events:
            async for event in events:
                if isinstance(event, EventStreamUp):
                    # Whatever happened while the stream was down (or before it first connected) went unseen.
                    self._manager.engine_events_up = True
                    self._manager.engine_up = True
                    await self._reconcile()
                elif isinstance(event, EventStreamDown):
                    self._manager.engine_events_up = False
                else:
                    await self._on_container(event)

    async def _on_container(self, event: ContainerEvent) -> None:
        """A start, death or OOM kill lightd did not see through a console stream is handled now; a
        container destroyed behind lightd's back is marked missing; a pause or unpause (`docker pause` outside
        lightd) moves the state of an attached server (a detached one is re-attached as it is)."""
        server = self._manager.find(event.internal_id)
        if server is None:
            return
        async with self._reconciling:
            if isinstance(event, ContainerPaused | ContainerUnpaused) and server.attached:
                try:
                    await follow_engine_pause(server, self._env)
                except LightdError as exc:
                    log.warning("%s: could not check its container: %s", server.id, exc)
            if isinstance(event, ContainerDestroyed) and not (server.lock.locked or server.deleted):
                # Also while its console stream reports the exit (that path does not look for the container).
                try:
                    status = await self._env.status(server.id)
                except LightdError as exc:
                    log.warning("%s: could not check its container: %s", server.id, exc)
                else:
                    server.container_missing = not status.exists and server.install_state == "ready"
            await self._manager.recovery.reconcile(server)

    async def _poll(self) -> None:
        """The fallback: while the stream is down, ask the engine; when it is back (or a server is detached), reconcile."""
        manager = self._manager
        while True:
            await asyncio.sleep(self._poll_seconds)
            up = manager.engine_events_up or await self._env.available()
            # Servers left not compared (the engine failed to tell) are tried again at the poll's pace.
            if up and (not manager.engine_up or manager.recovery.pending or any(s.detached for s in manager)):
                log.info("Docker engine reachable; reconciling servers")
                manager.engine_up = True
                await self._reconcile()
            elif not up and manager.engine_up:
                log.warning("Docker engine became unreachable")
                manager.engine_up = False
