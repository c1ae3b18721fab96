"""Preflight: what is checked and prepared before a server's installer or server container starts — the
disk limit, the volume's owner, the mount pins, and a container made from an outdated spec (a PATCH) is
recreated. Every start goes through it, whoever asks for the start (API, crash restart, rebind, compat front
ends)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightd.errors import DiskQuotaExceeded
from lightd.servers.mounts import MountPins
from lightd.servers.volume_mounts import prepare_volume_mounts
from lightd.templates.edits import edit_files, placeholder_values
from lightd.volumes.service import VolumeService

if TYPE_CHECKING:
    from lightd.servers.environment import ContainerStatus, Environment
    from lightd.servers.server import Server


def parse_user(user: str) -> tuple[int, int]:
    """`"988:988"` -> (988, 988)."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid)


class Preflight:
    """Host-side preparation of a server's containers."""

    def __init__(self, volumes: VolumeService, mounts: MountPins, user: str, env: Environment,
                 interface: str = "172.17.0.1") -> None:
        self.interface = interface  # `{{config.docker.interface}}` of config-file edits
        self.volumes = volumes
        self.mounts = mounts
        self.env = env
        self.uid, self.gid = parse_user(user)

    async def before_install(self, server: Server) -> None:
        """Pin the mounts the installer binds."""
        await self.mounts.pin(server.id, server.spec.mount)

    async def after_install(self, server: Server) -> None:
        """Give the volume to the server's user (the installer ran as root)."""
        await self.volumes.chown(server.spec.volume_id, self.uid, self.gid)

    async def before_start(self, server: Server, status: ContainerStatus | None = None) -> None:
        """Refuse a start over the disk limit; re-own the volume and the volumes it mounts (Wings'
        check_permissions_on_boot: this also strips setuid/setgid bits); check and pin the mounts again;
        recreate a container its spec no longer describes (`status`: the container as just inspected)."""
        over, used, limit = await self.volumes.over_disk_limit(server.spec.volume_id, fresh=True)
        if over:
            server.daemon_message(f"Not enough disk space: {used} bytes used of the {limit} byte limit; "
                                  "free some space before starting the server")
            raise DiskQuotaExceeded(f"server {server.id} uses {used} bytes of its {limit} byte disk limit",
                                    details={"used": used, "limit": limit})
        await self.volumes.chown(server.spec.volume_id, self.uid, self.gid)
        await prepare_volume_mounts(self.volumes, server.spec, self.uid, self.gid)  # the same walk, each one
        if server.spec.config_files:  # a template's config-file edits, at every start as Wings makes them
            values = placeholder_values(server.spec, self.interface)
            for problem in await self.volumes.in_own_sandbox(server.spec.volume_id, edit_files, server.spec.config_files, values):
                server.daemon_message(f"Config file not edited: {problem}")
        await self.mounts.pin(server.id, server.spec.mount)
        if not await self.env.is_current(server.spec, server.volume_path, server.data_path, status):
            # What a PATCH left for the next start (image, environment, startup command, a removed limit):
            # the container is stopped here, and its volume and entrypoint stay.
            server.daemon_message("Applying the server's changed settings: recreating its container")
            await self.env.create(server.spec, server.volume_path, server.data_path)
