"""ProxiCloud web app volumes over lightd volumes. Every lightd volume is a `Volume`: one made here has the
name, storage label, size and type it was made with (volid `<storage>:<name>`); a ProxiCloud container's
own volume is its `vm-<vmid>-disk-0` at mountpoint `rootfs`; any other is `local:<volume id>`. Attaching a
volume adds it to the server's `volume_mounts` (a PATCH) at `/mnt/<name>`, as Proxmox's `mp=/mnt/<name>`,
and detaching takes it out: both from the container's next start. Who a volume is attached to is read
from the servers' specs; only the mount-point name (`mp0`-`mp9`) it was attached under is a record. A snapshot is a copy of the volume in a lightd volume of its own (through the volume
service: bounded walk, links never followed); restore copies it into a staging folder and swaps that with the
volume in one step (a stop midway leaves the volume whole, old or new), clone copies it into a new one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lightd.compat.base import services_of
from lightd.compat.proxicloud.app_models import (
    AttachRequest,
    CloneRequest,
    DetachRequest,
    RestoreRequest,
    SnapshotRequest,
    VolumeCreateRequest,
    path_vmid,
)
from lightd.compat.proxicloud.app_routes import records_of
from lightd.compat.proxicloud.app_views import STORAGE
from lightd.compat.proxicloud.node import node_of
from lightd.errors import Conflict, NotFound, ValidationFailed
from lightd.http import json_response, read_model
from lightd.servers.server import Server
from lightd.servers.volume_mounts import volumes_of
from lightd.timestamps import parse_rfc3339

routes = web.RouteTableDef()

GIB = 1024 ** 3
MOUNTPOINTS = tuple(f"mp{n}" for n in range(10))
LOCK_WAIT = 30.0
"""Proxmox queues a mount-point change behind a running start or stop; here it waits that long for it."""
_DISK_NAME = re.compile(r"^vm-[0-9]+-disk-[0-9]+$")
"""Proxmox's own names for containers' disks: not given to a volume made here."""


@dataclass(frozen=True, slots=True)
class VolumeEntry:
    volume_id: str  # the lightd volume
    volid: str
    name: str
    storage: str
    kind: str
    size_gb: int
    created_at: int | None
    attached_to: int | None = None
    mountpoint: str | None = None

    def view(self, node_name: str, used_bytes: int) -> dict[str, Any]:
        """A `Volume` (sizes in GB, as the real backend rounds them down)."""
        body: dict[str, Any] = {
            "volid": self.volid, "name": self.name, "size": self.size_gb, "used": used_bytes // GIB,
            "node": node_name, "storage": self.storage, "type": self.kind, "format": "subvol",
            "status": "in-use" if self.attached_to is not None else "available",
        }
        optional = {"attached_to": self.attached_to, "mountpoint": self.mountpoint, "created_at": self.created_at}
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


async def catalogue(request: web.Request) -> list[VolumeEntry]:
    """Every lightd volume but the snapshots' copies, oldest first."""
    services, node, records = services_of(request), node_of(request), records_of(request)
    pairs = await node.sync()
    rootfs: dict[str, tuple[int, dict[str, Any]]] = {}
    for vmid, server in pairs:
        rootfs.setdefault(server.spec.volume_id, (vmid, node.options_of(server.id)))
    named = await records.volume_records()
    attached = mount_points(pairs, await records.attachments())
    copies = {s["copy_id"] for s in await records.snapshots()}
    entries = []
    for row in await services.volumes.list():
        volume_id = row["volume_id"]
        if volume_id in copies:
            continue
        record, owner = named.get(volume_id), rootfs.get(volume_id)
        if record is not None:
            fields = (record["volid"], record["name"], record["storage"], record["kind"], int(record["size_gb"]))
        elif owner is not None:
            vmid, options = owner
            name, storage = f"vm-{vmid}-disk-0", str(options.get("storage", STORAGE))
            fields = (f"{storage}:{name}", name, storage, "ssd", int(options.get("rootfs", 0)))
        else:
            fields = (f"{STORAGE}:{volume_id}", volume_id, STORAGE, "ssd", 0)
        where = (owner[0], "rootfs") if owner is not None else attached.get(volume_id, (None, None))
        entries.append(VolumeEntry(volume_id, *fields, int(parse_rfc3339(row["created_at"])), *where))
    return entries


def mount_points(pairs: list[tuple[int, Server]], labels: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """volume id -> (vmid, mount point) of every volume a server mounts (its spec's `volume_mounts`): named as
    it was attached here, else (a PATCH through another API) the first mount point free."""
    points: dict[str, tuple[int, str]] = {}
    for vmid, server in pairs:
        ids = [m.volume_id for m in server.spec.volume_mounts]
        named = {vid: labels[vid][1] for vid in ids if vid in labels and labels[vid][0] == vmid}
        free = iter(m for m in MOUNTPOINTS if m not in named.values())
        for vid in ids:
            points.setdefault(vid, (vmid, named.get(vid) or next(free, "mp?")))
    return points


async def find(request: web.Request) -> VolumeEntry:
    volid = request.match_info["volid"]
    entry = next((e for e in await catalogue(request) if e.volid == volid), None)
    if entry is None:
        raise NotFound("volume not found")
    return entry


async def view(request: web.Request, entry: VolumeEntry) -> dict[str, Any]:
    return entry.view(node_of(request).name, await services_of(request).stats.disk.bytes_of(entry.volume_id))


async def _named_volume(request: web.Request, volid: str, name: str, storage: str, kind: str, size_gb: int) -> str:
    """A new lightd volume recorded under `volid` (409 if the volid is taken); its id."""
    if _DISK_NAME.match(name):
        raise ValidationFailed(f"name: '{name}' is a container disk name (vm-<vmid>-disk-<n>)")
    if any(e.volid == volid for e in await catalogue(request)):
        raise Conflict(f"volume '{volid}' already exists")
    volumes = services_of(request).volumes
    volume_id = (await volumes.create())["volume_id"]
    try:
        await records_of(request).add_volume_record(volume_id, volid, name, storage, kind, size_gb)
    except BaseException:
        await volumes.delete(volume_id)
        raise
    return volume_id


async def _entry_of(request: web.Request, volume_id: str) -> VolumeEntry:
    return next(e for e in await catalogue(request) if e.volume_id == volume_id)


# -- volumes ------------------------------------------------------------------------------------------
@routes.get("/api/volumes")
async def list_volumes(request: web.Request) -> web.Response:
    return json_response([await view(request, e) for e in await catalogue(request)])


@routes.post("/api/volumes")
async def create_volume(request: web.Request) -> web.Response:
    body = await read_model(request, VolumeCreateRequest)
    if body.node is not None and body.node != node_of(request).name:
        raise ValidationFailed(f"node: unknown node '{body.node}'")
    volid = f"{body.storage}:{body.name}"
    volume_id = await _named_volume(request, volid, body.name, body.storage, body.type, body.size)
    return json_response(await view(request, await _entry_of(request, volume_id)), status=201)


@routes.get("/api/volumes/{volid}")
async def get_volume(request: web.Request) -> web.Response:
    return json_response(await view(request, await find(request)))


@routes.delete("/api/volumes/{volid}")
async def delete_volume(request: web.Request) -> web.Response:
    entry = await find(request)
    if entry.attached_to is not None:
        raise Conflict(f"volume {entry.volid} is in use by CT {entry.attached_to} ({entry.mountpoint})")
    volumes, records = services_of(request).volumes, records_of(request)
    await volumes.delete(entry.volume_id)  # 409 while a container made elsewhere uses it
    for snapshot in await records.snapshots(entry.volume_id):  # a volume's snapshots go with it
        await volumes.delete(snapshot["copy_id"])
    await records.forget_volume(entry.volume_id)
    return json_response({"status": "deleted"})


@routes.post("/api/volumes/{volid}/attach/{vmid}")
async def attach(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    body = await read_model(request, AttachRequest, allow_empty=True)
    server = await node_of(request).find(vmid)
    await server.lock.wait_free(LOCK_WAIT)
    entry = await find(request)
    if entry.attached_to is not None:
        raise Conflict(f"volume {entry.volid} is already in use by CT {entry.attached_to} ({entry.mountpoint})")
    used = {e.mountpoint for e in await catalogue(request) if e.attached_to == vmid}
    mountpoint = body.mountpoint or next((m for m in MOUNTPOINTS if m not in used), None)
    if mountpoint is None or mountpoint in used:
        raise Conflict(f"CT {vmid} has no free mount point" if mountpoint is None else f"{mountpoint} of CT {vmid} is in use")
    target = f"/mnt/{entry.name}"  # Proxmox's `mp=/mnt/<volume name>`
    # Built from the spec and patched with no await between: the lock is taken before anything can change it.
    mounts = [*(m.model_dump() for m in server.spec.volume_mounts), {"volume_id": entry.volume_id, "target": target}]
    await services_of(request).servers.patch(server.id, {"volume_mounts": mounts})
    # The name only (the spec says whether it is attached); without it, it shows under the first free name.
    await records_of(request).attach(entry.volume_id, vmid, mountpoint)
    return json_response({"status": "attached", "message": f"{mountpoint} at {target} from CT {vmid}'s next start"})


@routes.post("/api/volumes/{volid}/detach/{vmid}")
async def detach(request: web.Request) -> web.Response:
    vmid = path_vmid(request)
    body = await read_model(request, DetachRequest, allow_empty=True)
    server = await node_of(request).find(vmid)
    await server.lock.wait_free(LOCK_WAIT)
    entry = await find(request)
    if entry.attached_to != vmid:
        raise Conflict(f"volume {entry.volid} is not attached to CT {vmid}")
    if entry.mountpoint == "rootfs":
        raise ValidationFailed(f"the root volume of CT {vmid} cannot be detached")
    if server.state != "offline" and not body.force:
        raise Conflict("container is running, use force=true to detach")
    mounts = [m.model_dump() for m in server.spec.volume_mounts if m.volume_id != entry.volume_id]
    await services_of(request).servers.patch(server.id, {"volume_mounts": mounts})
    await records_of(request).detach(entry.volume_id)
    running = server.state != "offline"
    return json_response({"status": "detached", "message": f"unmounted from CT {vmid} at its next start" if running
                          else f"not mounted when CT {vmid} next starts"})


# -- snapshots ----------------------------------------------------------------------------------------
def _snapshot_view(entry: VolumeEntry, row: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"name": row["name"], "volid": entry.volid, "created_at": int(row["created_at"]),
                            "size": int(row["size"]) // GIB}
    if row["description"]:
        body["description"] = row["description"]
    return body


async def _snapshot(request: web.Request, entry: VolumeEntry, name: str) -> dict[str, Any]:
    row = next((s for s in await records_of(request).snapshots(entry.volume_id) if s["name"] == name), None)
    if row is None:
        raise NotFound(f"snapshot '{name}' not found")
    return row


@routes.get("/api/volumes/{volid}/snapshots")
async def list_snapshots(request: web.Request) -> web.Response:
    entry = await find(request)
    return json_response([_snapshot_view(entry, s) for s in await records_of(request).snapshots(entry.volume_id)])


@routes.post("/api/volumes/{volid}/snapshots")
async def create_snapshot(request: web.Request) -> web.Response:
    body = await read_model(request, SnapshotRequest)
    entry = await find(request)
    records, services = records_of(request), services_of(request)
    if any(s["name"] == body.name for s in await records.snapshots(entry.volume_id)):
        raise Conflict(f"snapshot '{body.name}' already exists")
    copy_id = str(uuid.uuid4())

    async def take() -> None:
        await records.add_snapshot(entry.volume_id, body.name, copy_id, body.description)  # first: cleanup knows it
        try:
            await services.volumes.create(copy_id)
            copied = await services.volumes.copy_volume(entry.volume_id, copy_id)
            await records.snapshot_done(copy_id, copied["bytes"])
        except BaseException:
            await _drop_copy(request, copy_id)
            raise

    await services.run_owned(take(), name=f"snapshot {entry.volid}@{body.name}")
    return json_response(_snapshot_view(entry, await _snapshot(request, entry, body.name)), status=201)


async def _drop_copy(request: web.Request, copy_id: str) -> None:
    try:
        await services_of(request).volumes.delete(copy_id)
    except NotFound:
        pass
    await records_of(request).drop_snapshot(copy_id)


@routes.post("/api/volumes/{volid}/snapshots/restore")
async def restore_snapshot(request: web.Request) -> web.Response:
    body = await read_model(request, RestoreRequest)
    entry = await find(request)
    snapshot = await _snapshot(request, entry, body.snapshot_name)
    services = services_of(request)
    attached = entry.attached_to is not None and entry.mountpoint != "rootfs"
    if attached and (await node_of(request).find(entry.attached_to or 0)).state != "offline":
        raise Conflict(f"CT {entry.attached_to} is running: stop it first")
    # A copy over files a running container writes would be neither the snapshot nor its own state.
    for server in services.servers:
        if entry.volume_id in volumes_of(server.spec) and server.state != "offline" and not server.deleted:
            raise Conflict(f"container {server.id} uses volume {entry.volid} and is running: stop it first")
    work = services.volumes.restore_volume(snapshot["copy_id"], entry.volume_id)
    await services.run_owned(work, name=f"restore {entry.volid}@{body.snapshot_name}")
    return json_response({"status": "restored"})


@routes.post("/api/volumes/{volid}/snapshots/clone")
async def clone_snapshot(request: web.Request) -> web.Response:
    body = await read_model(request, CloneRequest)
    entry = await find(request)
    snapshot = await _snapshot(request, entry, body.snapshot_name)
    storage = body.storage or entry.storage
    volume_id = await _named_volume(request, f"{storage}:{body.new_name}", body.new_name, storage, entry.kind,
                                    entry.size_gb)
    services = services_of(request)

    async def fill() -> None:
        try:
            await services.volumes.copy_volume(snapshot["copy_id"], volume_id)
        except BaseException:
            await services.volumes.delete(volume_id)
            await records_of(request).forget_volume(volume_id)
            raise

    await services.run_owned(fill(), name=f"clone {entry.volid}@{body.snapshot_name}")
    return json_response(await view(request, await _entry_of(request, volume_id)), status=201)
