"""Changes to an installed server's definition: reinstall, rebind (new ports) and edits in place (PATCH).
Mixed into ServerManager, whose registry, engine and services they use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightd.config import Config
from lightd.errors import LightdError
from lightd.ports import PortPool
from lightd.servers.environment import Environment
from lightd.servers.events import NetworkRebound
from lightd.servers.install import install
from lightd.servers.limits import check_node_limits, with_default_limits
from lightd.servers.models import ContainerSpec, RebindRequest, ReinstallRequest, container_view
from lightd.servers.patch import apply_to_container, merged_spec
from lightd.servers.power import stop_server, wait_for_lock
from lightd.servers.volume_mounts import check_volume_mounts
from lightd.tasks import TaskOwner
from lightd.volumes.service import VolumeService

if TYPE_CHECKING:
    from lightd.servers.server import Server


class ServerChanges:
    """Reinstall, rebind and patch, for ServerManager."""

    config: Config
    tasks: TaskOwner
    ports: PortPool
    volumes: VolumeService
    _env: Environment

    def get(self, internal_id: str) -> Server: ...  # ServerManager's
    async def settled(self, internal_id: str, *, required: bool = True) -> Server: ...  # ServerManager's
    async def require_engine(self) -> None: ...  # ServerManager's
    def _apply_volume_rules(self, volume_id: str) -> None: ...  # ServerManager's

    # -- reinstall / rebind --------------------------------------------------------------------------
    async def reinstall(self, internal_id: str, request: ReinstallRequest) -> str:
        """Stop the server, drop its Docker container and run the install again; volume data stays."""
        server = await self.settled(internal_id)
        server.states.check_installed()
        await self.require_engine()
        await wait_for_lock(server, server.states.check_installed)
        changes = request.model_dump(exclude_none=True)
        spec = ContainerSpec.model_validate({**server.spec.model_dump(mode="json"), **changes})
        with server.lock.taken("reinstall"):
            before = (server.install_state, server.record.get("install_error"))
            # Shown at once (announced when the install itself begins): a client polling sees it begun.
            await server.set_install_state("installing", announce=False)
            server.install_task = self.tasks.spawn(self._reinstall(server, spec, before), name=f"reinstall:{internal_id}")
        return f"reinstall of {internal_id} accepted"

    async def _reinstall(self, server: Server, spec: ContainerSpec, before: tuple[str, str | None]) -> None:
        try:
            try:
                await stop_server(server)
                await self._env.remove(server.id)
                await self._set_spec(server, spec)
            except Exception:
                # The install never began: the server is as it was, and so is its install state (taken
                # back unannounced, as `installing` was shown); the failure is the reinstall's.
                await server.set_install_state(*before, announce=False)
                raise
            await install(server)
        except LightdError as exc:
            server.report_failure("reinstall", exc)
        finally:
            server.lock.release()

    async def rebind(self, internal_id: str, request: RebindRequest) -> str:
        """Move the server to new ports (validated and claimed now); the container is recreated."""
        server = await self.settled(internal_id)
        server.states.check_installed()
        await self.require_engine()
        await wait_for_lock(server, server.states.check_installed)
        with server.lock.taken("rebind"):
            old_keys = {p.key for p in server.spec.ports}
            await self.ports.claim([p for p in request.ports if p.key not in old_keys], internal_id)
            spec = server.spec.model_copy(update={"ports": request.ports})
            self.tasks.spawn(self._rebind(server, spec), name=f"rebind:{internal_id}")
        return f"rebind of {internal_id} accepted"

    async def _rebind(self, server: Server, spec: ContainerSpec) -> None:
        try:
            was_running = server.state != "offline"
            await stop_server(server)
            await self._set_spec(server, spec)
            await self.ports.release_all(server.id, keep=spec.ports)
            if server.install_state == "ready":
                await server.write_entrypoint()
                await self._env.create(spec, server.volume_path, server.data_path)
            server.publish(NetworkRebound([p.model_dump() for p in spec.ports]))
            if was_running:
                await server.start()
        except LightdError as exc:
            server.report_failure("rebind", exc)
            # It keeps the ports of the spec it has: those claimed by a rebind that failed early are freed.
            await self.ports.release_all(server.id, keep=server.spec.ports)
        finally:
            server.lock.release()

    # -- edit in place -------------------------------------------------------------------------------
    async def patch(self, internal_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change limits, environment, startup command, start pattern, stop, image or volume mounts without a
        reinstall: in force now where they can be, else at the next start; the answer says which."""
        # Not `settled`, and no await before the lock when it is free: a front end reads the spec, then patches.
        server = self.get(internal_id)
        server.states.check_installed()  # refused at once when its state forbids it
        await wait_for_lock(server, server.states.check_installed)
        server.lock.try_acquire("patch")
        try:
            spec = with_default_limits(merged_spec(server.spec, changes), self.config.docker)
            check_node_limits(spec)
            await check_volume_mounts(self.volumes, spec)
            outcome = await apply_to_container(server, self._env, spec)
            await self._set_spec(server, spec)
            self._apply_volume_rules(spec.volume_id)
        finally:
            server.lock.release()
        return {"container": container_view(server.record, server.runtime()), "applied": outcome.applied,
                "on_next_start": outcome.on_next_start, "warnings": outcome.warnings}

    async def _set_spec(self, server: Server, spec: ContainerSpec) -> None:
        await server.persist(spec=spec.model_dump(mode="json"))
        server.use_spec(spec)
