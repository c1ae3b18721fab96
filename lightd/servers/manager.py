"""ServerManager: all servers — create, list, power, reinstall, rebind, delete, and reconciling the store
with the engine at start-up and whenever the engine comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from lightd.config import Config
from lightd.errors import AlreadyExists, Conflict, DockerUnavailable, LightdError, NotFound, ValidationFailed
from lightd.events import EventBus
from lightd.ports import PortPool
from lightd.servers.environment import Environment
from lightd.servers.install import install
from lightd.servers.models import ContainerSpec, Limits, RebindRequest, ReinstallRequest, container_view
from lightd.servers.mounts import MountPins
from lightd.servers.patch import apply_to_container, merged_spec
from lightd.servers.preflight import Preflight
from lightd.servers.server import Server
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)

POWER_ACTIONS = ("start", "stop", "restart", "kill")


class ServerManager:
    """Every server of this node, by internal id."""

    def __init__(
        self, *, config: Config, store: Store, env: Environment, events: EventBus, tasks: TaskOwner,
        ports: PortPool, volumes: VolumeService, mounts: MountPins,
    ) -> None:
        self.config = config
        self.store = store
        self.env = env
        self.events = events
        self.tasks = tasks
        self.ports = ports
        self.volumes = volumes
        self.mounts = mounts
        self.preflight = Preflight(volumes, mounts, config.docker.user, env)
        self.servers: dict[str, Server] = {}
        self.engine_up = False
        self._creating: set[str] = set()
        self._listing: tuple[tuple[Any, ...], bytes] | None = None

    def _data_path(self, internal_id: str) -> Path:
        return self.config.data_dir / "servers" / internal_id

    def _build(self, record: dict[str, Any]) -> Server:
        return Server(
            record, env=self.env, store=self.store, events=self.events, tasks=self.tasks, config=self.config,
            volume_path=self.volumes.path_of(record["volume_id"]), data_path=self._data_path(record["internal_id"]),
            preflight=self.preflight,
        )

    def _apply_disk_limit(self, volume_id: str) -> None:
        """The volume's disk limit: the smallest `limits.disk` of the servers using it (0/None: unlimited)."""
        limits = [s.spec.limits.disk for s in self.servers.values() if s.spec.volume_id == volume_id and s.spec.limits.disk]
        self.volumes.set_disk_limit(volume_id, min(limits) if limits else None)

    def with_default_limits(self, spec: ContainerSpec) -> ContainerSpec:
        """`docker.default_limits` for every limit the create left out."""
        defaults = self.config.docker.default_limits.model_dump()
        defaults["pids"] = defaults["pids"] or self.config.docker.pids_limit
        given = spec.limits.model_dump()
        filled = {key: defaults[key] if value is None else value for key, value in given.items()}
        return spec.model_copy(update={"limits": Limits.model_validate(filled)})

    def check_node_limits(self, spec: ContainerSpec) -> None:
        """Limits this node cannot give: 400 naming the field (Docker would refuse them only later)."""
        cores = os.cpu_count() or 1
        if spec.limits.cpu is not None and not 0.01 <= spec.limits.cpu <= cores:
            raise ValidationFailed(f"limits.cpu: must be between 0.01 and {cores} (this node's CPUs)",
                                   details={"field": "limits.cpu"})

    # -- queries -------------------------------------------------------------------------------------
    def get(self, internal_id: str) -> Server:
        """The server, or NotFound."""
        server = self.servers.get(internal_id)
        if server is None:
            raise NotFound(f"container {internal_id} not found")
        return server

    async def view(self, internal_id: str) -> dict[str, Any]:
        """The public shape of one server (from memory: every change is written through `Server.persist`)."""
        server = self.get(internal_id)
        return container_view(server.record, server.runtime())

    async def list(self) -> list[dict[str, Any]]:
        """Every server's public shape, oldest first (then by id)."""
        servers = sorted(self.servers.values(), key=lambda s: (s.record["created_at"], s.id))
        return [container_view(s.record, s.runtime()) for s in servers]

    async def listing_json(self) -> bytes:
        """`{"containers": [...], "count": n, "total": n, "next_cursor": null}` (the whole list as one page of
        `container_page`) as JSON, re-encoded only when a server changed: every change
        goes through `Server.persist` (which moves `updated_at`) or shows in the state or the missing flag."""
        key = tuple((s.id, s.record["updated_at"], s.state, s.container_missing) for s in self.servers.values())
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
        if not await self.env.available():
            self.engine_up = False
            raise DockerUnavailable("Docker engine unreachable")

    # -- create / delete -----------------------------------------------------------------------------
    async def create(self, spec: ContainerSpec) -> dict[str, Any]:
        """Validate, reserve ports, record the server and start its install in the background."""
        if spec.internal_id in self.servers or spec.internal_id in self._creating:
            raise AlreadyExists(f"container {spec.internal_id} already exists")
        # Reserved before the first await: a concurrent create of the same id must see it.
        self._creating.add(spec.internal_id)
        try:
            return await self._create(spec)
        finally:
            self._creating.discard(spec.internal_id)

    async def _create(self, spec: ContainerSpec) -> dict[str, Any]:
        spec = self.with_default_limits(spec)
        self.check_node_limits(spec)
        # SECURITY: symlink mount escape — every source is walked without following links (and again,
        # and pinned, before every start: see Preflight).
        await self.mounts.check_async(spec.mount)
        try:
            await self.volumes.record(spec.volume_id)
        except NotFound:
            raise ValidationFailed(f"volume_id: volume {spec.volume_id} not found", details={"field": "volume_id"}) from None
        await self.require_engine()
        await self.ports.claim(spec.ports, spec.internal_id)
        try:
            await self.store.insert_container(spec.internal_id, spec.volume_id, spec.model_dump(mode="json"), "installing")
        except Exception:
            await self.ports.release_all(spec.internal_id)
            raise
        record = await self.store.get_container(spec.internal_id)
        server = self._build(record)
        self.servers[spec.internal_id] = server
        self._apply_disk_limit(spec.volume_id)
        server.lock.try_acquire("install")
        server.install_task = self.tasks.spawn(self._install(server), name=f"install:{server.id}")
        return container_view(record, server.runtime())

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
            await self.env.remove(internal_id)
        except LightdError:
            server.deleted = False
            raise
        await self.ports.release_all(internal_id)
        await self.store.delete_tokens_of(internal_id)
        await self.store.delete_container(internal_id)
        self.servers.pop(internal_id, None)
        self._apply_disk_limit(server.spec.volume_id)
        await self.mounts.unpin(internal_id)
        # Entrypoint, install script and install log (written by lightd only: the container sees them read-only).
        await asyncio.to_thread(shutil.rmtree, server.data_path, True)
        server.publish_event("deleted")
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
        server = self.get(internal_id)
        if action == "kill":
            await self.require_engine()
            if server.state == "offline":
                raise Conflict(f"server {internal_id} is not running")
            return self.tasks.spawn(self._run_kill(server), name=f"kill:{internal_id}")
        if action == "start":
            server.check_can_start()
        elif action == "stop" and server.state == "offline":
            raise Conflict(f"server {internal_id} is not running")
        elif action == "restart":
            server.check_ready()
        await self.require_engine()
        server.lock.try_acquire(action)
        if action in ("stop", "restart"):
            # `stopping` shows at once: a client polling right after the answer sees the action begun.
            await server.begin_stop()
        return self.tasks.spawn(self._run_power(server, action, timeout), name=f"{action}:{internal_id}")

    async def _run_kill(self, server: Server) -> LightdError | None:
        try:
            await server.kill()
        except LightdError as exc:
            return exc
        return None

    async def _run_power(self, server: Server, action: str, timeout: float | None) -> LightdError | None:
        """Run a locked power action; its failure is published and returned, never raised into the owner."""
        try:
            if action == "start":
                await server.start()
            elif action == "stop":
                await server.stop(timeout)
            elif action == "restart":
                await server.restart(timeout)
        except LightdError as exc:
            server.report_failure(action, exc)
            return exc
        finally:
            server.lock.release()
        return None

    async def send_command(self, internal_id: str, command: str) -> None:
        """Write a command line to the server's stdin."""
        await self.get(internal_id).send_command(command)

    # -- reinstall / rebind --------------------------------------------------------------------------
    async def reinstall(self, internal_id: str, request: ReinstallRequest) -> str:
        """Stop the server, drop its Docker container and run the install again; volume data stays."""
        server = self.get(internal_id)
        server.check_installed()
        await self.require_engine()
        changes = request.model_dump(exclude_none=True)
        spec = ContainerSpec.model_validate({**server.spec.model_dump(mode="json"), **changes})
        server.lock.try_acquire("reinstall")
        # Shown at once (announced when the install itself begins): a client polling sees it begun.
        server.install_state = "installing"
        await server.persist(install_state="installing", install_error=None)
        server.install_task = self.tasks.spawn(self._reinstall(server, spec), name=f"reinstall:{internal_id}")
        return f"reinstall of {internal_id} accepted"

    async def _reinstall(self, server: Server, spec: ContainerSpec) -> None:
        try:
            await self._stop_for_change(server)
            await self.env.remove(server.id)
            await self._set_spec(server, spec)
            await install(server)
        except LightdError as exc:
            server.publish_event("error", action="reinstall", message=str(exc))
        finally:
            server.lock.release()

    async def rebind(self, internal_id: str, request: RebindRequest) -> str:
        """Move the server to new ports (validated and claimed now); the container is recreated."""
        server = self.get(internal_id)
        server.check_installed()
        await self.require_engine()
        server.lock.try_acquire("rebind")
        try:
            old_keys = {p.key for p in server.spec.ports}
            await self.ports.claim([p for p in request.ports if p.key not in old_keys], internal_id)
        except LightdError:
            server.lock.release()
            raise
        spec = server.spec.model_copy(update={"ports": request.ports})
        self.tasks.spawn(self._rebind(server, spec), name=f"rebind:{internal_id}")
        return f"rebind of {internal_id} accepted"

    async def _rebind(self, server: Server, spec: ContainerSpec) -> None:
        try:
            was_running = server.state != "offline"
            await self._stop_for_change(server)
            await self.ports.release_all(server.id, keep=spec.ports)
            await self._set_spec(server, spec)
            if server.install_state == "ready":
                await server.write_entrypoint()
                await self.env.create(spec, server.volume_path, server.data_path)
            server.publish_event("network_rebound", ports=[p.model_dump() for p in spec.ports])
            if was_running:
                await server.start()
        except LightdError as exc:
            server.publish_event("error", action="rebind", message=str(exc))
        finally:
            server.lock.release()

    # -- edit in place -------------------------------------------------------------------------------
    async def patch(self, internal_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change limits, environment, startup command, start pattern, stop or image without a reinstall: in
        force now where they can be, else at the next start; the answer says which."""
        server = self.get(internal_id)
        server.check_installed()
        server.lock.try_acquire("patch")
        try:
            spec = self.with_default_limits(merged_spec(server.spec, changes))
            self.check_node_limits(spec)
            outcome = await apply_to_container(server, self.env, spec)
            await self._set_spec(server, spec)
            self._apply_disk_limit(spec.volume_id)
        finally:
            server.lock.release()
        return {"container": container_view(server.record, server.runtime()), "applied": outcome.applied,
                "on_next_start": outcome.on_next_start, "warnings": outcome.warnings}

    async def _stop_for_change(self, server: Server) -> None:
        if server.state != "offline":
            await server.stop()

    async def _set_spec(self, server: Server, spec: ContainerSpec) -> None:
        await server.persist(spec=spec.model_dump(mode="json"))
        server.use_spec(spec)

    # -- start-up and engine recovery ----------------------------------------------------------------
    async def load(self) -> None:
        """Build every server from the store; reconcile with the engine if it is up."""
        for record in await self.store.list_containers():
            server = self._build(record)
            self.servers[server.id] = server
            self._apply_disk_limit(server.spec.volume_id)
            if record["install_state"] == "installing":
                # The daemon stopped mid-install: the install cannot be trusted.
                await server.set_install_state("failed", "install was interrupted by a daemon restart")
        if await self.env.available():
            self.engine_up = True
            await self._remove_leftovers()
            await self.reconcile()
        else:
            log.warning("Docker engine unreachable at start-up; servers are re-attached when it is back")

    async def _remove_leftovers(self) -> None:
        """Installer containers left by a daemon that died mid-install (they would go on running their
        script against the volume) and containers of this prefix that belong to no server."""
        try:
            removed = await self.env.remove_leftovers(set(self.servers))
        except LightdError as exc:
            log.warning("could not remove leftover containers: %s", exc)
            return
        for name in removed:
            log.info("removed leftover container %s", name)

    async def reconcile(self) -> None:
        """Compare the engine with the state last announced: re-attach running containers, handle exits
        that happened unseen; never start or stop anything."""
        for server in list(self.servers.values()):
            if server.lock.locked or server.deleted or server.stream_ending or server.attached:
                continue
            try:
                status = await self.env.status(server.id)
                server.container_missing = not status.exists and server.install_state == "ready"
                if status.running:
                    await server.reattach()
                elif server.state != "offline":
                    await server.exited_while_away(status.exit_code if status.exists else None, status.oom_killed)
            except LightdError as exc:
                log.warning("%s: reconcile failed: %s", server.id, exc)

    async def watch_engine(self, interval: float = 5.0) -> None:
        """Poll the engine; when it is back after being away (or a stream was cut), reconcile."""
        while True:
            await asyncio.sleep(interval)
            up = await self.env.available()
            if up and (not self.engine_up or any(s.detached for s in self.servers.values())):
                log.info("Docker engine reachable; reconciling servers")
                self.engine_up = True
                await self.reconcile()
            elif not up and self.engine_up:
                log.warning("Docker engine became unreachable")
                self.engine_up = False
