"""ServerManager: all servers — create, list, power, delete, and reconciling the store with the engine at
start-up and whenever the engine comes back (reinstall, rebind and edits in place: `servers/changes.py`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from lightd.config import Config
from lightd.errors import AlreadyExists, Conflict, DockerUnavailable, LightdError, NotFound, ValidationFailed
from lightd.events import EventBus
from lightd.ports import PortPool
from lightd.servers.changes import ServerChanges
from lightd.servers.environment import EngineQueries, Environment
from lightd.servers.events import ServerDeleted
from lightd.servers.install import install
from lightd.servers.limits import check_node_limits, with_default_limits
from lightd.servers.listing import ChangeCount
from lightd.servers.models import ContainerSpec, container_view
from lightd.servers.mounts import MountPins
from lightd.servers.power import POWER_ACTIONS, run_kill, run_locked, wait_for_lock
from lightd.servers.preflight import Preflight
from lightd.servers.recovery import Recovery
from lightd.servers.server import Server
from lightd.servers.volume_mounts import check_volume_mounts
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.timers import TimerWheel
from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)
SETTLE_TIMEOUT_SECONDS = 10.0
"""How long a request waits for its server's first comparison with the engine after a daemon start."""


class ServerManager(ServerChanges):
    """Every server of this node, by internal id."""

    def __init__(
        self, *, config: Config, store: Store, env: Environment, events: EventBus, tasks: TaskOwner,
        ports: PortPool, volumes: VolumeService, mounts: MountPins, timers: TimerWheel | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._env = env
        self.events = events
        self.tasks = tasks
        self.timers = timers if timers is not None else TimerWheel(tasks, config.servers.max_timers)
        self.ports = ports
        self.volumes = volumes
        self.mounts = mounts
        self.preflight = Preflight(volumes, mounts, config.docker.user, env, config.docker.interface)
        self._servers: dict[str, Server] = {}
        self.engine_up = False
        self.engine_events_up = False  # EngineWatch's: the engine's event stream is connected
        self.recovery = Recovery(env, tasks, config.docker.recovery_concurrency)
        self._creating: set[str] = set()
        self.changes = ChangeCount()  # moves with every change the listing shows, servers added or removed too
        self._listing: tuple[int, bytes] | None = None
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []  # what else a server owns (its backups)

    def _data_path(self, internal_id: str) -> Path:
        return self.config.data_dir / "servers" / internal_id

    def _build(self, record: dict[str, Any]) -> Server:
        return Server(
            record, env=self._env, store=self.store, events=self.events, tasks=self.tasks, timers=self.timers,
            config=self.config,
            volume_path=self.volumes.path_of(record["volume_id"]), data_path=self._data_path(record["internal_id"]),
            preflight=self.preflight, changes=self.changes,
        )

    def _apply_volume_rules(self, volume_id: str) -> None:
        """The volume's disk limit (the smallest `limits.disk` of the servers using it; 0/None: unlimited) and
        file denylist (the union of their templates' `file_denylist`)."""
        users = [s.spec for s in self._servers.values() if s.spec.volume_id == volume_id]
        limits = [spec.limits.disk for spec in users if spec.limits.disk]
        self.volumes.set_disk_limit(volume_id, min(limits) if limits else None)
        self.volumes.set_denylist(volume_id, [spec.template.file_denylist for spec in users if spec.template])

    # -- queries -------------------------------------------------------------------------------------
    @property
    def engine(self) -> EngineQueries:
        """The engine's read-only queries (addresses, images, networks, info), for front ends."""
        return self._env

    def __contains__(self, internal_id: object) -> bool:
        return internal_id in self._servers

    def __iter__(self) -> Iterator[Server]:
        """Every server (a snapshot: safe across awaits)."""
        return iter(list(self._servers.values()))

    def __len__(self) -> int:
        return len(self._servers)

    def find(self, internal_id: str) -> Server | None:
        """The server, or None."""
        return self._servers.get(internal_id)

    def get(self, internal_id: str) -> Server:
        """The server, or NotFound."""
        server = self._servers.get(internal_id)
        if server is None:
            raise NotFound(f"container {internal_id} not found")
        return server

    async def settled(self, internal_id: str, *, required: bool = True) -> Server:
        """The server, compared with the engine since the daemon started (now, if its turn has not come yet);
        with `required`, DockerUnavailable when the engine could not tell its state."""
        server = self.get(internal_id)
        if not await self.recovery.settle(server, SETTLE_TIMEOUT_SECONDS) and required:
            raise DockerUnavailable(f"container {internal_id}: its state could not be read from the engine yet")
        return server

    async def view(self, internal_id: str) -> dict[str, Any]:
        """The public shape of one server (from memory: every change is written through `Server.persist`),
        compared with the engine first when that has not happened since the daemon started."""
        server = await self.settled(internal_id, required=False)
        return container_view(server.record, server.runtime())

    async def list(self) -> list[dict[str, Any]]:
        """Every server's public shape, oldest first (then by id)."""
        servers = sorted(self._servers.values(), key=lambda s: (s.record["created_at"], s.id))
        return [container_view(s.record, s.runtime()) for s in servers]

    async def listing_json(self) -> bytes:
        """`{"containers": [...], "count": n, "total": n, "next_cursor": null}` (the whole list as one page of
        `container_page`) as JSON, re-encoded only when a server changed: every change
        goes through `Server.persist` (which moves `updated_at`) or shows in the state or the missing flag,
        and each moves `changes`."""
        key = self.changes.value
        if self._listing is None or self._listing[0] != key:
            containers = await self.list()
            self._listing = (key, orjson.dumps({"containers": containers, "count": len(containers),
                                                "total": len(containers), "next_cursor": None}))
        return self._listing[1]

    def logs(self, internal_id: str, lines: int) -> list[str]:
        """The last `lines` console lines."""
        return self.get(internal_id).history.tail(lines)

    # -- engine --------------------------------------------------------------------------------------
    async def require_engine(self) -> None:
        """DockerUnavailable unless the engine answers. While its event stream is connected, that stream says
        so (no ping per request: a call that fails later is a 503 all the same)."""
        if self.engine_events_up:
            return
        if not await self._env.available():
            self.engine_up = False
            raise DockerUnavailable("Docker engine unreachable")

    # -- create / delete -----------------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> dict[str, Any]:
        """Validate, reserve ports, record the server and start its install in the background."""
        if spec.internal_id in self._servers or spec.internal_id in self._creating:
            raise AlreadyExists(f"container {spec.internal_id} already exists")
        # Reserved before the first await: a concurrent create of the same id must see it.
        self._creating.add(spec.internal_id)
        try:
            return await self._create(spec)
        finally:
            self._creating.discard(spec.internal_id)

    async def _create(self, spec: ContainerSpec) -> dict[str, Any]:
        spec = with_default_limits(spec, self.config.docker)
        check_node_limits(spec)
        # SECURITY: symlink mount escape — every source is walked without following links (and again,
        # and pinned, before every start: see Preflight).
        await self.mounts.check_async(spec.mount)
        try:
            await self.volumes.record(spec.volume_id)
        except NotFound:
            raise ValidationFailed(f"volume_id: volume {spec.volume_id} not found", details={"field": "volume_id"}) from None
        await check_volume_mounts(self.volumes, spec)
        await self.require_engine()
        server = await self._record(spec, "installing")
        server.lock.try_acquire("install")
        server.install_task = self.tasks.spawn(self._install(server), name=f"install:{server.id}")
        return container_view(server.record, server.runtime())

    async def _record(self, spec: ContainerSpec, install_state: str) -> Server:
        """Claim the ports, store the record and build the server (the ports freed if the record fails)."""
        await self.ports.claim(spec.ports, spec.internal_id)
        try:
            await self.store.insert_container(spec.internal_id, spec.volume_id, spec.model_dump(mode="json"), install_state)
        except Exception:
            await self.ports.release_all(spec.internal_id)
            raise
        server = self._build(await self.store.get_container(spec.internal_id))
        self._servers[spec.internal_id] = server
        self.changes.bump()
        self._apply_volume_rules(spec.volume_id)
        return server

    async def adopt(self, spec: ContainerSpec) -> Server:
        """Record a server moved here from another node (lightd/transfers): same id, its volume already in
        place, `ready` without an install, not started. AlreadyExists or PortInUse leave nothing behind."""
        if spec.internal_id in self._servers or spec.internal_id in self._creating:
            raise AlreadyExists(f"container {spec.internal_id} already exists")
        self._creating.add(spec.internal_id)
        try:
            return await self._record(spec, "ready")
        finally:
            self._creating.discard(spec.internal_id)

    async def create_and_wait(self, spec: ContainerSpec, *, start: bool, timeout: float) -> Server:
        """Create, wait for the install and (with `start`) start, for APIs that answer only when the server
        is ready. Any failure deletes the server before raising; an owned volume (`spec.owned_volume`) is
        the server's from the start: deleted with it, or at once when the create is refused."""
        try:
            await self.create(spec)
        except BaseException:
            if spec.owned_volume:
                await self.volumes.delete(spec.volume_id)
            raise
        server = self.get(spec.internal_id)
        try:
            await asyncio.wait_for(self.wait_installed(server), timeout)
            if start:
                await self.power_and_wait(server.id, "start")
        except (LightdError, TimeoutError) as exc:
            await self.delete(server.id)
            if isinstance(exc, TimeoutError):
                raise LightdError(f"container {server.id} did not become ready in time") from None
            raise
        return server

    async def wait_installed(self, server: Server) -> None:
        """Wait for the server's install to end (it is not cancelled if the waiter is); ValidationFailed
        when it failed."""
        if server.install_task is not None:
            await asyncio.shield(server.install_task)
        if server.install_state != "ready":
            raise ValidationFailed(f"install failed: {server.record.get('install_error')}")

    async def _install(self, server: Server) -> None:
        try:
            await install(server)
        finally:
            server.lock.release()

    async def delete(self, internal_id: str) -> None:
        """Kill, remove the Docker container, free the ports, drop the record. The volume stays, unless
        it was made for this container (`owned_volume`)."""
        server = self.get(internal_id)
        await self.require_engine()
        await self.settled(internal_id)
        server.deleted = True
        task = server.install_task
        if task is not None and not task.done():
            # Deleting a server cancels its install (and so its one-shot container).
            task.cancel()
            await asyncio.wait([task], timeout=30)
        try:
            if server.state != "offline":
                try:
                    await server.kill()
                except Conflict:
                    pass
            await self._env.remove(internal_id)
        except LightdError:
            server.deleted = False
            raise
        await self.ports.release_all(internal_id)
        await self.store.delete_tokens_of(internal_id)
        await self.store.delete_container(internal_id)
        self._servers.pop(internal_id, None)
        self.changes.bump()
        self.recovery.forget(internal_id)
        self._apply_volume_rules(server.spec.volume_id)
        await self.mounts.unpin(internal_id)
        # Entrypoint, install script and install log (written by lightd only: the container sees them read-only).
        await asyncio.to_thread(shutil.rmtree, server.data_path, True)
        await asyncio.gather(*(forget(internal_id) for forget in self.on_delete))
        server.publish(ServerDeleted())
        if server.spec.owned_volume:
            try:
                await self.volumes.delete(server.spec.volume_id)
            except LightdError as exc:
                log.warning("%s: its volume %s was not removed: %s", internal_id, server.spec.volume_id, exc)

    # -- power ---------------------------------------------------------------------------------------
    async def power(self, internal_id: str, action: str, timeout: float | None = None) -> str:
        """Check and begin a power action; it runs on in the background. Returns the accepted message."""
        await self._begin_power(internal_id, action, timeout)
        return f"{action} signal sent to {internal_id}" if action == "kill" else f"{action} of {internal_id} accepted"

    async def power_and_wait(self, internal_id: str, action: str, timeout: float | None = None) -> None:
        """Run a power action to its end (for APIs that answer only when it is done). The action runs in
        an owned task: a client that disconnects does not cut it in half."""
        task = await self._begin_power(internal_id, action, timeout)
        error = await asyncio.shield(task)
        if error is not None:
            raise error

    async def _begin_power(self, internal_id: str, action: str, timeout: float | None) -> asyncio.Task[Any]:
        if action not in POWER_ACTIONS:
            raise ValidationFailed(f"action: must be one of {', '.join(POWER_ACTIONS)}", details={"field": "action"})
        server = await self.settled(internal_id)
        if action == "kill":
            await self.require_engine()
            server.states.check_power(action)
            return self.tasks.spawn(run_kill(server), name=f"kill:{internal_id}")
        server.states.check_power(action)  # a state that forbids it (transferring, stopping, ...) is refused at once
        await self.require_engine()
        await wait_for_lock(server, lambda: server.states.check_power(action))
        with server.lock.taken(action):
            if action in ("stop", "restart"):
                # `stopping` shows at once: a client polling right after the answer sees the action begun.
                await server.begin_stop()
            return self.tasks.spawn(run_locked(server, action, timeout), name=f"{action}:{internal_id}")

    async def send_command(self, internal_id: str, command: str) -> None:
        """Write a command line to the server's stdin."""
        await (await self.settled(internal_id)).send_command(command)

    async def exec(self, internal_id: str, cmd: list[str], stdin: bytes | None = None) -> tuple[int, str]:
        """Run `cmd` in the server's running container: its exit code and output."""
        server = await self.settled(internal_id)
        if server.state != "running":
            raise Conflict(f"container {internal_id} is not running")
        return await self._env.exec(internal_id, cmd, stdin)

    # -- start-up and engine recovery ----------------------------------------------------------------
    async def open(self) -> None:
        """Build every server from the store (the API can serve them at once: each shows its last announced
        state) and remove what a dead daemon left. Comparing them with the engine is `reconcile`'s, in the
        background: EngineWatch runs it when the engine's event stream connects."""
        for record in await self.store.list_containers():
            server = self._build(record)
            self._servers[server.id] = server
            self.changes.bump()
            self._apply_volume_rules(server.spec.volume_id)
            if record["install_state"] == "installing":
                # The daemon stopped mid-install: the install cannot be trusted.
                await server.set_install_state("failed", "install was interrupted by a daemon restart")
        self.recovery.begin(self)
        if await self._env.available():
            self.engine_up = True
            # Before the API serves: an installer of a create made now must not be taken for a leftover.
            await self._remove_leftovers()
        else:
            log.warning("Docker engine unreachable at start-up; servers are re-attached when it is back")

    async def load(self) -> None:
        """`open`, then compare every server with the engine if it is up (for what runs no EngineWatch)."""
        await self.open()
        if self.engine_up:
            await self.reconcile()

    async def _remove_leftovers(self) -> None:
        """Installer containers left by a daemon that died mid-install (they would go on running their
        script against the volume) and containers of this prefix that belong to no server."""
        try:
            removed = await self._env.remove_leftovers(set(self._servers))
        except LightdError as exc:
            log.warning("could not remove leftover containers: %s", exc)
            return
        for name in removed:
            log.info("removed leftover container %s", name)

    async def reconcile(self) -> None:
        """Compare every server with the engine (`Recovery.run`: one list, then `docker.recovery_concurrency`
        at a time); crash detection after start-up is `EngineWatch`'s."""
        await self.recovery.run(self)
