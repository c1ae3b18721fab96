"""/volumes: volumes and the sandboxed file API inside them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.http import json_response, read_model
from lightd.servers.listing import PageRequest, volume_page

routes = web.RouteTableDef()

ArchiveFormat = Literal["zip", "tar", "tar.gz", "tar.bz2"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class WriteFile(_Body):
    path: str = Field(min_length=1)
    content: str
    encoding: Literal["utf8", "base64"] = "utf8"
    mode: str | None = Field(default=None, pattern=r"^0?[0-7]{3,4}$", description="octal, e.g. 0644")


class PathBody(_Body):
    path: str = Field(min_length=1)


class Move(_Body):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class Compress(_Body):
    paths: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    path: str | None = None
    format: ArchiveFormat = "tar.gz"
    destination: str | None = Field(default=None, min_length=1)
    output_name: str | None = Field(default=None, min_length=1)
    """Upstream Lightd's name for `destination`; with neither paths nor path, the whole volume is archived."""

    @model_validator(mode="after")
    def _one_source(self) -> "Compress":
        if self.output_name is not None:
            if self.destination is not None:
                raise ValueError("give destination or output_name, not both")
            self.destination = self.output_name
            if self.paths is None and self.path is None:
                self.path = ""  # upstream's form archives the volume root
        if (self.paths is None) == (self.path is None):
            raise ValueError("give either paths (a list) or path (one folder or file)")
        return self

    @property
    def sources(self) -> list[str]:
        return self.paths if self.paths is not None else [self.path or ""]


class Decompress(_Body):
    path: str = Field(min_length=1)
    archive_path: str | None = Field(default=None, min_length=1)
    """Upstream Lightd's name for `path`."""
    destination: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _archive_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("archive_path"), str) and "path" not in data:
            data = {**data, "path": data["archive_path"]}
        return data

    @model_validator(mode="after")
    def _one_path(self) -> "Decompress":
        if self.archive_path is not None and self.archive_path != self.path:
            raise ValueError("give path or archive_path, not both")
        return self


class PathQuery(_Body):
    path: str = ""


class RequiredPathQuery(_Body):
    path: str = Field(min_length=1)


class VolumeListQuery(_Body):
    state: Literal["in_use", "unused"] | None = None
    """in_use: a server uses the volume; unused: none does."""
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Volumes per page (default: all of them, in one answer)."""
    cursor: str | None = Field(default=None, min_length=1, max_length=256)
    """`next_cursor` of the previous page."""


class VolumeView(View):
    volume_id: str
    path: str
    """The volume's directory on the host."""
    created_at: datetime


class ListedVolume(VolumeView):
    containers: list[str]
    """The servers using the volume."""


class VolumeList(View):
    volumes: list[ListedVolume]
    count: int
    """Volumes on this page."""
    total: int
    """Volumes matching the filter, on every page."""
    next_cursor: str | None
    """`cursor` of the next page; null on the last one."""


class Usage(View):
    bytes: int
    """Bytes of the regular files (hard links counted once)."""
    files: int
    directories: int
    partial: bool
    """The walk left something out (folders past volumes.max_depth, a tree moved meanwhile)."""
    partial_reason: str | None
    disk_limit: int | None
    """Bytes lightd's writes are held to (the servers' limits.disk); null: unlimited."""


class VolumeDetail(VolumeView):
    usage: Usage


class VolumeUsage(Usage):
    volume_id: str


class VolumeDeleted(View):
    deleted: VolumeView


class FileWritten(View):
    path: str
    size: int


class Entry(View):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: str
    """Permission bits in octal, e.g. "0644"."""
    mode_bits: int
    """The same bits as a number (0644 is 420)."""
    is_dir: bool
    is_file: bool
    is_symlink: bool
    """The entry itself is a link (never followed: size and mode are the link's)."""
    mime: str
    """Guessed from the extension; inode/directory, inode/symlink, application/octet-stream otherwise."""
    modified: datetime


class Listing(View):
    path: str
    entries: list[Entry]
    """Folders first, then by name."""


class PathDeleted(View):
    path: str
    deleted: Literal["file", "directory", "symlink", "other"]
    """What was removed (a link itself, never its target)."""


class FolderMade(View):
    path: str
    created: bool
    """False (and status 200) when the folder was already there."""


class Skipped(View):
    path: str
    reason: str


class _Skips(View):
    skipped: list[Skipped]
    """What was left out on purpose (links, special files, too deep...), the first ones only."""
    skipped_count: int
    """How many were left out in all."""


class Moved(View):
    source: str
    destination: str


class Copied(Moved, _Skips):
    files: int
    directories: int
    bytes: int


class Compressed(_Skips):
    path: str
    """The archive made."""
    format: ArchiveFormat
    size: int
    files: int
    directories: int


class Decompressed(_Skips):
    destination: str
    files: int
    directories: int
    bytes: int


def _volume_id(request: web.Request) -> str:
    return request.match_info["volume_id"]


@routes.post("/volumes")
@documented(status=201, response=VolumeView)
async def create_volume(request: web.Request) -> web.Response:
    volume = await request.config_dict[keys.VOLUMES].create()
    return json_response(volume, status=201)


@routes.get("/volumes")
@documented(query=VolumeListQuery, response=VolumeList)
async def list_volumes(request: web.Request) -> web.Response:
    """Volumes with the servers using each, oldest first (then by id); filtered by state, paged with limit
    and next_cursor."""
    q = read_query(request, VolumeListQuery)
    page = await volume_page(request.config_dict[keys.SERVERS], state=q.state, page=PageRequest(q.limit, q.cursor))
    return json_response(page)


@routes.get("/volumes/{volume_id}")
@documented(response=VolumeDetail)
async def get_volume(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.VOLUMES].get(_volume_id(request)))


@routes.delete("/volumes/{volume_id}")
@documented(response=VolumeDeleted)
async def delete_volume(request: web.Request) -> web.Response:
    return json_response({"deleted": await request.config_dict[keys.VOLUMES].delete(_volume_id(request))})


@routes.get("/volumes/{volume_id}/usage")
@documented(response=VolumeUsage)
async def volume_usage(request: web.Request) -> web.Response:
    volume_id = _volume_id(request)
    usage = await request.config_dict[keys.VOLUMES].disk_usage(volume_id)
    return json_response({"volume_id": volume_id, **usage})


@routes.post("/volumes/{volume_id}/files")
@documented(body=WriteFile, status=201, response=FileWritten)
async def write_file(request: web.Request) -> web.Response:
    body = await read_model(request, WriteFile)
    mode = int(body.mode, 8) if body.mode is not None else None
    result = await request.config_dict[keys.VOLUMES].write_file(
        _volume_id(request), body.path, body.content, body.encoding, mode
    )
    return json_response(result, status=201)


@routes.get("/volumes/{volume_id}/files")
@documented(query=PathQuery, response=Listing)
async def list_files(request: web.Request) -> web.Response:
    query = read_query(request, PathQuery)
    return json_response(await request.config_dict[keys.VOLUMES].list_dir(_volume_id(request), query.path))


@routes.delete("/volumes/{volume_id}/files")
@documented(query=RequiredPathQuery, response=PathDeleted)
async def delete_path(request: web.Request) -> web.Response:
    query = read_query(request, RequiredPathQuery)
    return json_response(await request.config_dict[keys.VOLUMES].delete_path(_volume_id(request), query.path))


@routes.post("/volumes/{volume_id}/folders")
@documented(body=PathBody, status=201, also=(200,), response=FolderMade)
async def make_folder(request: web.Request) -> web.Response:
    body = await read_model(request, PathBody)
    result = await request.config_dict[keys.VOLUMES].mkdir(_volume_id(request), body.path)
    return json_response(result, status=201 if result["created"] else 200)


@routes.post("/volumes/{volume_id}/copy")
@documented(body=Move, status=201, response=Copied)
async def copy(request: web.Request) -> web.Response:
    body = await read_model(request, Move)
    result = await request.config_dict[keys.VOLUMES].copy(_volume_id(request), body.source, body.destination)
    return json_response(result, status=201)


@routes.post("/volumes/{volume_id}/rename")
@documented(body=Move, response=Moved)
async def rename(request: web.Request) -> web.Response:
    body = await read_model(request, Move)
    return json_response(await request.config_dict[keys.VOLUMES].rename(_volume_id(request), body.source, body.destination))


@routes.post("/volumes/{volume_id}/compress")
@documented(body=Compress, status=201, response=Compressed)
async def compress(request: web.Request) -> web.Response:
    body = await read_model(request, Compress)
    result = await request.config_dict[keys.VOLUMES].compress(
        _volume_id(request), body.sources, body.format, body.destination
    )
    return json_response(result, status=201)


@routes.post("/volumes/{volume_id}/decompress")
@documented(body=Decompress, response=Decompressed)
async def decompress(request: web.Request) -> web.Response:
    body = await read_model(request, Decompress)
    result = await request.config_dict[keys.VOLUMES].decompress(_volume_id(request), body.path, body.destination)
    return json_response(result)
