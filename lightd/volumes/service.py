"""VolumeService: volume records and their directories, the sandboxed file API over them, and their disk
limits (kept by `quota.DiskLimits`).

Every filesystem call runs in a worker thread (`asyncio.to_thread`) inside a fresh `Sandbox` of the volume
root; the event loop only awaits. Every write lightd makes draws on the volume's `WriteBudget`
(`quota.py`), which refuses it with DiskQuotaExceeded before the limit is passed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from lightd.config import VolumeLimits
from lightd.errors import AlreadyExists, Conflict, LightdError, NotFound, PayloadTooLarge, ValidationFailed, VolumeInUse
from lightd.store import Store
from lightd.timestamps import rfc3339
from lightd.volumes import archives, clone, files
from lightd.volumes import swap as swapping
from lightd.volumes.denylist import Denylist
from lightd.volumes.files import SAFE_MODE_BITS
from lightd.volumes.incoming import IncomingFile
from lightd.volumes.quota import DiskLimits, VolumeDisk, WriteBudget
from lightd.volumes.sandbox import MAX_PATH_BYTES, Sandbox, split_path

log = logging.getLogger(__name__)

T = TypeVar("T")
Encoding = Literal["utf8", "base64"]


class DiskCheck(NamedTuple):
    """A volume against its disk limit: `over` is used > limit (never with no limit)."""

    over: bool
    used: int
    limit: int | None


def canonical_volume_id(volume_id: str) -> str | None:
    """The id if it is a canonical lowercase uuid string, else None (so it can never name another path)."""
    try:
        parsed = uuid.UUID(volume_id)
    except (ValueError, AttributeError, TypeError):
        return None
    return volume_id if str(parsed) == volume_id else None


def _in_sandbox(root: Path, denylist: Denylist | None, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        box = Sandbox(root, denylist)
        box.__enter__()
    except FileNotFoundError:
        raise NotFound("the volume's directory is missing on disk") from None
    try:
        return operation(box, *args, **kwargs)
    except BaseException:
        # Given back here, in the thread that wrote, so a request cancelled meanwhile cannot skew the figure.
        budget = kwargs.get("budget")
        if budget is not None:
            budget.rollback()
        raise
    finally:
        box.__exit__()


def _make_volume_dir(path: Path) -> None:
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)  # not narrowed by the umask: container users must be able to enter it


def _remove_volume_dir(path: Path) -> None:
    try:
        _in_sandbox(path, None, files.clear)
    except NotFound:
        return
    os.rmdir(path)


class VolumeService:
    """Creates, lists and deletes volumes, and reads and changes the files inside them."""

    def __init__(self, root: Path, store: Store, limits: VolumeLimits, *, restores: Path) -> None:
        self.root = root
        self.restores = restores  # restores being staged, on the volumes' file system (swap.py)
        self.store = store
        self.limits = limits
        self._disks = DiskLimits(limits, self._walk_usage)
        self._denylists: dict[str, Denylist] = {}
        self._frozen: dict[str, str] = {}  # volumes lightd's writes are refused on (409), with why
        self._started = time.time()  # temp files older than this are left over from an earlier run

    async def open(self) -> None:
        """Create the volumes root and the restores' staging folder; settle restores a dead daemon left."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self.restores.mkdir, mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(os.chmod, self.restores, 0o700)
        for work in await asyncio.to_thread(lambda: sorted(self.restores.iterdir())):
            # Before the swap: the volume is untouched and the staged copy goes; after it: the old tree goes.
            restored = await asyncio.to_thread(swapping.recover, work)
            log.warning("volume restore %s interrupted by a daemon stop: %s", work.name,
                        "completed" if restored else "rolled back, the volume is unchanged")

    def path_of(self, volume_id: str) -> Path:
        """Absolute directory of a volume (for bind mounts); ValueError for a malformed id."""
        if canonical_volume_id(volume_id) is None:
            raise ValueError(f"not a volume id: {volume_id!r}")
        return (self.root / volume_id).absolute()

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"volume_id": row["id"], "path": str(self.path_of(row["id"])), "created_at": rfc3339(row["created_at"])}

    async def _row(self, volume_id: str) -> dict[str, Any]:
        row = await self.store.get_volume(volume_id) if canonical_volume_id(volume_id) else None
        if row is None:
            raise NotFound(f"volume {volume_id} not found")
        return row

    async def _run(self, volume_id: str, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await self._row(volume_id)
        denylist = self.denylist(volume_id)  # a tenant's operation: the file denylist applies
        return await asyncio.to_thread(_in_sandbox, self.path_of(volume_id), denylist, operation, *args, **kwargs)

    async def in_sandbox(self, volume_id: str, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `operation(box, *args, **kwargs)` in a worker thread on the volume's Sandbox, its file denylist
        applied (a `budget=` from `write_budget` is rolled back if it fails); NotFound for an unknown volume."""
        return await self._run(volume_id, operation, *args, **kwargs)

    async def in_own_sandbox(self, volume_id: str, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`in_sandbox` without the denylist, for lightd's own work (config edits, usage, chown, clean-up, copies)."""
        await self._row(volume_id)
        return await asyncio.to_thread(_in_sandbox, self.path_of(volume_id), None, operation, *args, **kwargs)

    # -- volumes -------------------------------------------------------------------------------------
    async def create(self, volume_id: str | None = None) -> dict[str, Any]:
        """Make a new empty volume directory and record it. The id is a new UUID, or one the caller chose
        (and recorded first, so that a stop at any point leaves it knowing what to clean up)."""
        volume_id = volume_id or str(uuid.uuid4())
        path = self.path_of(volume_id)
        await asyncio.to_thread(_make_volume_dir, path)
        try:
            await self.store.insert_volume(volume_id, str(path))
        except BaseException:
            await asyncio.to_thread(os.rmdir, path)
            raise
        return self._view(await self._row(volume_id))

    async def adopt(self, volume_id: str, staged: Path) -> dict[str, Any]:
        """Record a volume whose files were made elsewhere on this file system (an incoming transfer):
        `staged` is renamed into place in one step; AlreadyExists if the id is taken."""
        path = self.path_of(volume_id)
        if await self.store.get_volume(volume_id) is not None:
            raise AlreadyExists(f"volume {volume_id} already exists")
        await self.store.insert_volume(volume_id, str(path))  # first: a stop at any point knows what to clean
        try:
            await asyncio.to_thread(os.rename, staged, path)  # refused onto a non-empty folder: never merged
            await asyncio.to_thread(os.chmod, path, 0o755)
        except BaseException:
            await self.store.delete_volume(volume_id)
            raise
        return self._view(await self._row(volume_id))

    async def list(self) -> list[dict[str, Any]]:
        """Every volume (without disk usage, which costs a walk each)."""
        return [self._view(row) for row in await self.store.list_volumes()]

    async def record(self, volume_id: str) -> dict[str, Any]:
        """The volume's stored record, without a disk walk; NotFound for an unknown or malformed id."""
        return await self._row(volume_id)

    async def get(self, volume_id: str) -> dict[str, Any]:
        """One volume with its disk usage."""
        view = self._view(await self._row(volume_id))
        return {**view, "usage": await self.disk_usage(volume_id)}

    async def delete(self, volume_id: str) -> dict[str, Any]:
        """Remove a volume's files and record; 409 while a container uses it."""
        view = self._view(await self._row(volume_id))
        users = await self.store.containers_using_volume(volume_id)
        if users:
            raise VolumeInUse(f"volume {volume_id} is used by container(s): {', '.join(users)}", details={"containers": users})
        await asyncio.to_thread(_remove_volume_dir, self.path_of(volume_id))
        await self.store.delete_volume(volume_id)
        self._disks.forget(volume_id)
        self._denylists.pop(volume_id, None)
        return view

    async def disk_usage(self, volume_id: str) -> dict[str, Any]:
        """Bytes of regular files (hard links once), files, directories, `partial` (and why) and the limit."""
        disk = await self._known_disk(volume_id)
        usage = await self._disks.measure(volume_id, disk, fresh=True)
        return {**usage.as_dict(), "disk_limit": disk.limit}

    # -- disk limits (quota.py) and writes -----------------------------------------------------------
    def set_disk_limit(self, volume_id: str, limit: int | None) -> None:
        """Set the disk limit (bytes) lightd's writes to a volume are held to; 0 or None: unlimited."""
        self._disks.set_limit(volume_id, limit)

    def freeze(self, volume_id: str, why: str) -> None:
        """Refuse lightd's writes to the volume (409, saying why) until `thaw`: one being sent to another node."""
        self._frozen[volume_id] = why

    def thaw(self, volume_id: str) -> None:
        """Take lightd's writes to the volume again."""
        self._frozen.pop(volume_id, None)

    # -- file denylists ------------------------------------------------------------------------------
    def denylist(self, volume_id: str) -> Denylist:
        """The volume's file denylist (one live object: SFTP sessions holding it see every update)."""
        return self._denylists.setdefault(volume_id, Denylist())

    def set_denylist(self, volume_id: str, lists: list[list[str]]) -> None:
        """Deny what any of these pattern lists (one per server using the volume) names; none: nothing."""
        self.denylist(volume_id).update(lists)

    def fresh_usage_bytes(self, volume_id: str) -> int | None:
        """`usage_bytes` when its figure is fresh enough to need neither a walk nor a store query (the stats
        round asks for every running server every few seconds); None otherwise."""
        return self._disks.fresh_bytes(volume_id)

    def cached_usage(self, volume_id: str) -> tuple[int, bool] | None:
        """The last usage figure (no walk, no store query) and whether it is older than usage_cache_seconds;
        None before the first walk."""
        return self._disks.cached(volume_id)

    async def usage_bytes(self, volume_id: str) -> int:
        """Bytes used by a volume: measured at most usage_cache_seconds ago, plus lightd's writes since."""
        disk = await self._known_disk(volume_id)
        await self._disks.measure(volume_id, disk)
        return disk.used or 0

    async def over_disk_limit(self, volume_id: str, *, fresh: bool = False) -> DiskCheck:
        """Whether a volume is over its disk limit (for the start check); cached unless `fresh`."""
        disk = await self._known_disk(volume_id)
        await self._disks.measure(volume_id, disk, fresh=fresh)
        return DiskCheck(disk.over_limit(), disk.used or 0, disk.limit)

    async def _known_disk(self, volume_id: str) -> VolumeDisk:
        await self._row(volume_id)  # NotFound first: no state is kept for ids that name no volume
        return self._disks.disk(volume_id)

    async def _walk_usage(self, volume_id: str) -> files.Usage:
        return await self.in_own_sandbox(volume_id, files.usage, "", self.limits.usage_max_depth)

    async def _budget(self, volume_id: str) -> WriteBudget:
        if volume_id in self._frozen:
            raise Conflict(f"volume {volume_id} is read-only: {self._frozen[volume_id]}")
        return await self._disks.budget(volume_id)

    async def write_budget(self, volume_id: str) -> WriteBudget:
        """The budget one write operation to the volume draws on (its disk limit, measured if stale)."""
        await self._row(volume_id)
        return await self._budget(volume_id)

    # -- upkeep --------------------------------------------------------------------------------------
    async def chown(self, volume_id: str, uid: int, gid: int) -> dict[str, int]:
        """chown the volume and everything in it to uid:gid, links never followed, setuid/setgid cleared."""
        return await self.in_own_sandbox(volume_id, files.chown_tree, uid, gid)

    async def clean_temp_files(self) -> int:
        """Remove the temp files interrupted writes left in every volume before this service started."""
        # Every directory lightd writes a temp file into is named by a client path (at most 2048
        # components) plus at most max_depth levels of a copy or an extraction.
        depth = MAX_PATH_BYTES // 2 + self.limits.max_depth + 1
        removed = 0
        for row in await self.store.list_volumes():
            try:
                removed += await self.in_own_sandbox(row["id"], files.clean_temp_files, self._started, depth)
            except LightdError as exc:  # one damaged volume must not keep the others uncleaned
                log.warning("volume %s: temp files not cleaned: %s", row["id"], exc.message)
        return removed

    # -- files ---------------------------------------------------------------------------------------
    async def write_file(self, volume_id: str, path: str, content: str, encoding: Encoding = "utf8",
                         mode: int | None = None) -> dict[str, Any]:
        """Create or atomically replace a file (parents are created); 413 over max_write_bytes."""
        limit = self.limits.max_write_bytes
        if encoding == "base64":
            if len(content) // 4 * 3 > limit + 3:
                raise PayloadTooLarge(f"content: larger than {limit} bytes")
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationFailed("content: not valid base64", details={"field": "content"}) from None
        else:
            data = content.encode("utf-8", "surrogatepass")
        if len(data) > limit:
            raise PayloadTooLarge(f"content: {len(data)} bytes is larger than the {limit} byte limit")
        split_path(path)  # 400 for a bad path before touching the disk
        await self._run(volume_id, files.write_file, path, data, mode, budget=await self._budget(volume_id))
        return {"path": path, "size": len(data)}

    async def incoming(self, volume_id: str, directory: str, name: str, max_bytes: int) -> IncomingFile:
        """A file to stream into `directory`/`name` (not opened yet), held to `max_bytes` and the disk limit."""
        await self._row(volume_id)
        return IncomingFile(self.path_of(volume_id), directory, name, max_bytes=max_bytes,
                            budget=await self._budget(volume_id), denylist=self.denylist(volume_id))

    async def list_dir(self, volume_id: str, path: str = "") -> dict[str, Any]:
        """Entries of a directory: name, type, size, mode, modified."""
        entries = await self._run(volume_id, files.list_dir, path)
        return {"path": "/".join(split_path(path)), "entries": entries}

    async def mkdir(self, volume_id: str, path: str) -> dict[str, Any]:
        """Create a folder and its parents."""
        created = await self._run(volume_id, files.make_dirs, path)
        return {"path": "/".join(split_path(path)), "created": created}

    async def delete_path(self, volume_id: str, path: str) -> dict[str, Any]:
        """Delete a file, a link (never its target) or a folder tree."""
        kind = await self._run(volume_id, files.remove, path, budget=await self._budget(volume_id))
        return {"path": "/".join(split_path(path)), "deleted": kind}

    async def copy(self, volume_id: str, source: str, destination: str) -> dict[str, Any]:
        """Copy a file or folder inside the volume; links inside are skipped and reported."""
        result = await self._run(volume_id, files.copy, source, destination, max_depth=self.limits.max_depth,
                                 budget=await self._budget(volume_id))
        return {"source": source, "destination": destination, **result}

    async def copy_volume(self, source_id: str, destination_id: str, *, replace: bool = False) -> dict[str, Any]:
        """Copy a volume's files and folders into another; with `replace` the destination is emptied first."""
        await self._row(destination_id)
        if replace:
            await self.in_own_sandbox(destination_id, files.clear)
            disk = self._disks.get(destination_id)
            if disk is not None:
                await self._disks.measure(destination_id, disk, fresh=True)  # emptied: the cached figure is stale
        return await self.in_own_sandbox(source_id, clone.copy_contents, self.path_of(destination_id),
                               max_depth=self.limits.max_depth, budget=await self._budget(destination_id))

    async def restore_volume(self, source_id: str, destination_id: str) -> dict[str, Any]:
        """Replace a volume's files with a copy of another's, all or nothing: staged, then swapped in one step."""
        await self._row(destination_id)
        if destination_id in self._frozen:
            raise Conflict(f"volume {destination_id} is read-only: {self._frozen[destination_id]}")
        disk = self._disks.get(destination_id)
        # The staged copy is the volume's whole new content: held to the limit from zero, not atop the old files.
        budget = WriteBudget(VolumeDisk(limit=disk.limit, used=0)) if disk is not None and disk.limit is not None else WriteBudget()
        result = await self.in_own_sandbox(source_id, clone.copy_in_place, self.restores / destination_id,
                                           self.path_of(destination_id), max_depth=self.limits.max_depth, budget=budget)
        if disk is not None:
            await self._disks.measure(destination_id, disk, fresh=True)  # swapped: the cached figure is stale
        return result

    async def rename(self, volume_id: str, source: str, destination: str) -> dict[str, Any]:
        """Move or rename an entry inside the volume (409 if the destination exists)."""
        await self._run(volume_id, files.rename, source, destination)
        return {"source": source, "destination": destination}

    async def chmod(self, volume_id: str, path: str, mode: int) -> dict[str, Any]:
        """Change an entry's permission bits (0o777 of them) without following links."""
        await self._run(volume_id, files.chmod, path, mode)
        return {"path": path, "mode": f"{mode & SAFE_MODE_BITS:04o}"}

    # -- archives ------------------------------------------------------------------------------------
    async def compress(self, volume_id: str, paths: list[str], fmt: str, destination: str | None = None) -> dict[str, Any]:
        """Archive paths of the volume into a new archive inside it."""
        destination = destination or archives.default_archive_name(paths, fmt)
        return await self._run(volume_id, archives.compress, paths, fmt, destination, self.limits,
                               budget=await self._budget(volume_id))

    async def decompress(self, volume_id: str, path: str, destination: str | None = None) -> dict[str, Any]:
        """Extract an archive of the volume into a folder of it, within the archive limits."""
        return await self._run(volume_id, archives.decompress, path, destination, self.limits,
                               budget=await self._budget(volume_id))
