"""The front end's file area: one lightd volume (recorded in the store) that `/api/files/*` serves and that
jobs read their `input_files` from. Every access goes through VolumeService, whose sandbox refuses `..`,
absolute paths and paths through symbolic links; nothing here touches the file system itself."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import mimetypes
from typing import Any

from lightd.compat.base import CompatServices
from lightd.compat.container_codes.store import ContainerCodesStore
from lightd.errors import NotFound, PathNotAllowed, PayloadTooLarge
from lightd.volumes.transfer import Content, open_content

SETTING = "files_volume"
WALK_MAX_ENTRIES = 10_000
WALK_MAX_DEPTH = 32


def area_path(path: str) -> str:
    """The seed names files with absolute-looking paths (`/uploads/a.pdf`): they are relative to the area.
    Everything else (`..`, NUL, links) is judged by the volume sandbox."""
    if not isinstance(path, str) or not path.strip("/"):
        raise PathNotAllowed("path: must name a file")
    return path.lstrip("/")


class FileArea:
    """The front end's files, in one volume made on first use."""

    def __init__(self, services: CompatServices, store: ContainerCodesStore) -> None:
        self.services = services
        self.store = store
        self._lock = asyncio.Lock()
        self._volume: str | None = None

    async def volume(self) -> str:
        """The area's volume id (made again if someone deleted it)."""
        async with self._lock:
            store = self.store
            volume_id = self._volume or await store.get_setting(SETTING)
            if volume_id:
                try:
                    await self.services.volumes.record(volume_id)
                    self._volume = volume_id
                    return volume_id
                except NotFound:
                    pass
            volume_id = (await self.services.volumes.create())["volume_id"]
            await store.set_setting(SETTING, volume_id)
            self._volume = volume_id
            return volume_id

    async def write(self, path: str, data: bytes, mode: int | None = None) -> dict[str, Any]:
        return await write_bytes(self.services, await self.volume(), area_path(path), data, mode)

    async def open(self, path: str) -> Content:
        return await open_content(self.services.volumes, await self.volume(), area_path(path))

    async def read_all(self, path: str) -> bytes:
        return await read_bytes(self.services, await self.volume(), area_path(path))

    async def info(self, path: str) -> dict[str, Any]:
        return await entry_info(self.services, await self.volume(), area_path(path))

    async def list(self, path: str) -> dict[str, Any]:
        return await self.services.volumes.list_dir(await self.volume(), path.lstrip("/"))

    async def delete(self, path: str) -> dict[str, Any]:
        return await self.services.volumes.delete_path(await self.volume(), area_path(path))


async def write_bytes(services: CompatServices, volume_id: str, path: str, data: bytes, mode: int | None = None) -> dict[str, Any]:
    limit = services.config.volumes.max_write_bytes
    if len(data) > limit:
        raise PayloadTooLarge(f"file: {len(data)} bytes is larger than the {limit} byte limit")
    # VolumeService takes text; base64 carries any bytes through it unchanged.
    return await services.volumes.write_file(volume_id, path, base64.b64encode(data).decode(), "base64", mode)


async def read_bytes(services: CompatServices, volume_id: str, path: str) -> bytes:
    content = await open_content(services.volumes, volume_id, path)
    try:
        limit = services.config.volumes.max_write_bytes
        if content.size > limit:
            raise PayloadTooLarge(f"{path}: {content.size} bytes is larger than the {limit} byte limit")
        return b"".join([chunk async for chunk in content.chunks()])
    finally:
        await asyncio.to_thread(content.close)


async def entry_info(services: CompatServices, volume_id: str, path: str) -> dict[str, Any]:
    """One entry's listing record (size, type, mode, modified), read through its parent's listing."""
    parent, _, name = path.rstrip("/").rpartition("/")
    listing = await services.volumes.list_dir(volume_id, parent)
    for entry in listing["entries"]:
        if entry["name"] == name:
            return entry
    raise NotFound(f"file /{path} not found")


async def walk_files(services: CompatServices, volume_id: str) -> list[dict[str, Any]]:
    """Every regular file of a volume (`path`, `size`), breadth first, at most WALK_MAX_ENTRIES."""
    found: list[dict[str, Any]] = []
    pending = [("", 0)]
    seen = 0
    while pending:
        directory, depth = pending.pop(0)
        listing = await services.volumes.list_dir(volume_id, directory)
        for entry in listing["entries"]:
            seen += 1
            if seen > WALK_MAX_ENTRIES:
                return found
            path = f"{directory}/{entry['name']}" if directory else entry["name"]
            if entry["type"] == "directory" and depth < WALK_MAX_DEPTH:
                pending.append((path, depth + 1))
            elif entry["type"] == "file":
                found.append({"path": path, "size": entry["size"]})
    return found


def matching(files: list[dict[str, Any]], patterns: list[str]) -> list[dict[str, Any]]:
    globs = [p.lstrip("/") for p in patterns]
    return [f for f in files if any(fnmatch.fnmatchcase(f["path"], g) for g in globs)]


def mime_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
