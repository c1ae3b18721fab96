"""Recovery: comparing servers with the engine after the daemon starts, and whenever the engine comes back, in
the background while the API serves. A round asks the engine for one list of its containers, then
`concurrency` workers compare one server each (`reconcile_server`: re-attach a running container, handle an
exit that went unseen). A server a request needs before its turn is compared at once (`settle`); no server is
ever compared by two callers at a time (one exit is never handled twice)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from lightd.errors import LightdError
from lightd.servers.environment import ContainerStatus, Environment
from lightd.servers.server import Server
from lightd.tasks import TaskOwner
from lightd.timestamps import rfc3339

log = logging.getLogger(__name__)


async def reconcile_server(server: Server, env: Environment, listed: ContainerStatus | None = None) -> bool:
    """Compare the engine with the state last announced: re-attach a running container, handle an exit that
    happened unseen; never start or stop anything. A server an action or its console stream deals with is left
    to it. `listed` is the container as the engine's list showed it, still current: it spares the inspect when
    the answer is to attach (which checks for itself) or to do nothing. False when the engine could not tell."""
    if server.lock.locked or server.deleted or server.stream_ending or server.attached:
        return True
    try:
        status = listed
        if status is None or not status.exists or (not status.running and server.state != "offline"):
            # What a list does not say: that a container is really gone, and an exit's code and OOM flag.
            status = await env.status(server.id)
        server.container_missing = not status.exists and server.install_state == "ready"
        if status.running:
            await server.reattach(paused=status.paused)
        elif server.state != "offline":
            await server.exited_while_away(status.exit_code if status.exists else None, status.oom_killed)
    except LightdError as exc:
        log.warning("%s: reconcile failed: %s", server.id, exc)
        return False
    return True


class Recovery:
    """The servers not compared with the engine since the daemon started (`pending`), and the comparisons:
    by rounds of bounded concurrency, or one server at once for a request that needs it."""

    def __init__(self, env: Environment, tasks: TaskOwner, concurrency: int) -> None:
        self._env = env
        self._tasks = tasks
        self._concurrency = concurrency
        self.pending: set[str] = set()
        self._busy: dict[str, asyncio.Task[bool]] = {}
        self.rounds = 0
        self.last_round_seconds: float | None = None
        self.last_round_ended_at: float | None = None

    def begin(self, servers: Iterable[Server]) -> None:
        """Mark `servers` as not compared yet (at start-up: what they show is their last announced state)."""
        self.pending.update(server.id for server in servers)

    def forget(self, internal_id: str) -> None:
        self.pending.discard(internal_id)

    async def run(self, servers: Iterable[Server]) -> None:
        """One round over `servers`: one list of the engine's containers, then `concurrency` workers."""
        servers = list(servers)
        began = time.monotonic()
        # A server changed after this (a state persisted) is not compared from the list: it may be stale.
        versions = {server.id: server.record.get("updated_at") for server in servers}
        try:
            listed: dict[str, ContainerStatus] | None = await self._env.statuses()
        except LightdError as exc:
            log.warning("could not list the engine's containers: %s", exc)
            listed = None  # each server is inspected (and fails as the engine does)
        queue = iter(servers)

        async def worker() -> None:
            for server in queue:  # one shared iterator: each server goes to one worker
                current = listed is not None and server.record.get("updated_at") == versions[server.id]
                await self.reconcile(server, listed.get(server.id) if current and listed is not None else None)

        async with asyncio.TaskGroup() as group:
            for number in range(min(self._concurrency, len(servers))):
                group.create_task(worker(), name=f"recovery-worker-{number}")
        self.rounds += 1
        self.last_round_seconds = time.monotonic() - began
        self.last_round_ended_at = time.time()
        log.info("compared %d servers with the engine in %.2fs (%d not yet)", len(servers),
                 self.last_round_seconds, len(self.pending))

    async def reconcile(self, server: Server, listed: ContainerStatus | None = None) -> bool:
        """Compare one server now, after any comparison of it under way; False when the engine could not tell."""
        while (busy := self._busy.get(server.id)) is not None:
            await asyncio.wait({busy})
        task = self._start(server, listed)
        await asyncio.wait({task})  # a caller that is cancelled leaves the comparison to finish
        # An unexpected failure was logged by the task's owner; the round goes on with the others.
        return not task.cancelled() and task.exception() is None and task.result()

    async def settle(self, server: Server, timeout: float) -> bool:
        """Make sure the server was compared since the daemon started: at once if its turn has not come, else
        wait for its comparison. False when that failed or took more than `timeout` seconds."""
        task = self._busy.get(server.id)
        if task is None:
            if server.id not in self.pending:
                return True
            task = self._start(server, None)
        await asyncio.wait({task}, timeout=timeout)
        return server.id not in self.pending

    def _start(self, server: Server, listed: ContainerStatus | None) -> asyncio.Task[bool]:
        # An owned task: a request that goes away must not cut a re-attach in half.
        task = self._tasks.spawn(self._compare(server, listed), name=f"reconcile:{server.id}")
        self._busy[server.id] = task
        return task

    async def _compare(self, server: Server, listed: ContainerStatus | None) -> bool:
        try:
            compared = await reconcile_server(server, self._env, listed)
            if compared:
                self.pending.discard(server.id)
            return compared
        finally:
            self._busy.pop(server.id, None)

    def report(self) -> dict[str, Any]:
        """For GET /system: servers not compared yet, rounds run, how long the last took and when it ended."""
        return {"pending": len(self.pending), "rounds": self.rounds, "last_round_seconds": self.last_round_seconds,
                "last_round_ended_at": rfc3339(self.last_round_ended_at)}
