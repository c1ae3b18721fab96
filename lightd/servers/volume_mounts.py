"""Other lightd volumes a server mounts (`ContainerSpec.volume_mounts`): checked at create and PATCH, prepared
before every start (owner and setuid bits, through the same sandboxed walk as the server's own volume) and
counted as in use, so a mounted volume cannot be deleted (409 volume_in_use)."""

from __future__ import annotations

from lightd.errors import Conflict, NotFound, ValidationFailed
from lightd.servers.models import ContainerSpec
from lightd.volumes.service import VolumeService


def volumes_of(spec: ContainerSpec) -> list[str]:
    """Every volume the server uses: its own, then those it mounts."""
    return [spec.volume_id, *(m.volume_id for m in spec.volume_mounts)]


async def check_volume_mounts(volumes: VolumeService, spec: ContainerSpec) -> None:
    """400 naming `volume_mounts` when a mounted volume does not exist."""
    for index, mount in enumerate(spec.volume_mounts):
        try:
            await volumes.record(mount.volume_id)
        except NotFound:
            raise ValidationFailed(f"volume_mounts.{index}.volume_id: volume {mount.volume_id} not found",
                                   details=[{"field": f"volume_mounts.{index}.volume_id", "message": "volume not found"}]) from None


async def prepare_volume_mounts(volumes: VolumeService, spec: ContainerSpec, uid: int, gid: int) -> None:
    """Before a start: give each mounted volume to the server's user (links never followed, setuid/setgid
    cleared, as its own volume); a volume gone since (a spec moved from another node) refuses the start (409)."""
    for mount in spec.volume_mounts:
        try:
            await volumes.chown(mount.volume_id, uid, gid)
        except NotFound:
            raise Conflict(f"volume_mounts: volume {mount.volume_id} (at {mount.target}) does not exist; "
                           "remove it from the server's volume_mounts") from None
