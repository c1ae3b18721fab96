"""VolumeService: volume records and their directories, and the sandboxed file API over them.

Every filesystem call runs in a worker thread (`asyncio.to_thread`) inside a fresh `Sandbox` of the volume
root; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

from lightd.config import VolumeLimits
from lightd.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from lightd.store import Store
from lightd.volumes import archives, files
from lightd.volumes.files import iso_time
from lightd.volumes.sandbox import Sandbox, split_path

T = TypeVar("T")
Encoding = Literal["utf8", "base64"]
STREAM_CHUNK = 256 * 1024


def canonical_volume_id(volume_id: str) -> str | None:
    """The id if it is a canonical lowercase uuid string, else None (so it can never name another path)."""
    try:
        parsed = uuid.UUID(volume_id)
    except (ValueError, AttributeError, TypeError):
        return None
    return volume_id if str(parsed) == volume_id else None


class FileStream:
    """An open regular file of a volume, read in a worker thread and capped at its size when opened."""

    def __init__(self, file: BinaryIO, size: int, name: str) -> None:
        self.file = file
        self.size = size
        self.name = name
        self.sent = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, at most `size` of them (a file growing meanwhile is cut at that size)."""
        while self.sent < self.size:
            chunk = await asyncio.to_thread(self.file.read, min(STREAM_CHUNK, self.size - self.sent))
            if not chunk:
                return
            self.sent += len(chunk)
            yield chunk

    @property
    def complete(self) -> bool:
        return self.sent == self.size

    def close(self) -> None:
        self.file.close()


def _in_sandbox(root: Path, operation: Callable[..., T], *args: Any) -> T:
    try:
        box = Sandbox(root)
        box.__enter__()
    except FileNotFoundError:
        raise NotFound("the volume's directory is missing on disk") from None
    try:
        return operation(box, *args)
    finally:
        box.__exit__()


def _make_volume_dir(path: Path) -> None:
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)  # not narrowed by the umask: container users must be able to enter it


def _remove_volume_dir(path: Path) -> None:
    try:
        _in_sandbox(path, files.clear)
    except NotFound:
        return
    os.rmdir(path)


class VolumeService:
    """Creates, lists and deletes volumes, and reads and changes the files inside them."""

    def __init__(self, root: Path, store: Store, limits: VolumeLimits) -> None:
        self.root = root
        self.store = store
        self.limits = limits

    async def open(self) -> None:
        """Create the volumes root."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    def path_of(self, volume_id: str) -> Path:
        """Absolute directory of a volume (for bind mounts); ValueError for a malformed id."""
        if canonical_volume_id(volume_id) is None:
            raise ValueError(f"not a volume id: {volume_id!r}")
        return (self.root / volume_id).absolute()

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"volume_id": row["id"], "path": str(self.path_of(row["id"])), "created_at": iso_time(row["created_at"])}

    async def _row(self, volume_id: str) -> dict[str, Any]:
        row = await self.store.get_volume(volume_id) if canonical_volume_id(volume_id) else None
        if row is None:
            raise NotFound(f"volume {volume_id} not found")
        return row

    async def _run(self, volume_id: str, operation: Callable[..., T], *args: Any) -> T:
        await self._row(volume_id)
        return await asyncio.to_thread(_in_sandbox, self.path_of(volume_id), operation, *args)

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
            raise Conflict(f"volume {volume_id} is used by container(s): {', '.join(users)}", details={"containers": users})
        await asyncio.to_thread(_remove_volume_dir, self.path_of(volume_id))
        await self.store.delete_volume(volume_id)
        return view

    async def disk_usage(self, volume_id: str) -> dict[str, int]:
        """Bytes of regular files (hard links once), file and directory counts."""
        return (await self._run(volume_id, files.usage)).as_dict()

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
        await self._run(volume_id, files.write_file, path, data, mode)
        return {"path": path, "size": len(data)}

    async def read_file(self, volume_id: str, path: str) -> FileStream:
        """An open regular file to stream (the caller closes it); FIFOs, devices and links are refused."""
        handle, size = await self._run(volume_id, Sandbox.open_file, path)
        return FileStream(handle, size, split_path(path)[-1])

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
        kind = await self._run(volume_id, files.remove, path)
        return {"path": "/".join(split_path(path)), "deleted": kind}

    async def copy(self, volume_id: str, source: str, destination: str) -> dict[str, Any]:
        """Copy a file or folder inside the volume; links inside are skipped and reported."""
        result = await self._run(volume_id, files.copy, source, destination)
        return {"source": source, "destination": destination, **result}

    async def rename(self, volume_id: str, source: str, destination: str) -> dict[str, Any]:
        """Move or rename an entry inside the volume (409 if the destination exists)."""
        await self._run(volume_id, files.rename, source, destination)
        return {"source": source, "destination": destination}

    async def chmod(self, volume_id: str, path: str, mode: int) -> dict[str, Any]:
        """Change an entry's permission bits without following links."""
        await self._run(volume_id, files.chmod, path, mode)
        return {"path": path, "mode": f"{mode:04o}"}

    # -- archives ------------------------------------------------------------------------------------
    async def compress(self, volume_id: str, paths: list[str], fmt: str, destination: str | None = None) -> dict[str, Any]:
        """Archive paths of the volume into a new archive inside it."""
        destination = destination or archives.default_archive_name(paths, fmt)
        return await self._run(volume_id, archives.compress, paths, fmt, destination, self.limits)

    async def decompress(self, volume_id: str, path: str, destination: str | None = None) -> dict[str, Any]:
        """Extract an archive of the volume into a folder of it, within the archive limits."""
        return await self._run(volume_id, archives.decompress, path, destination, self.limits)
