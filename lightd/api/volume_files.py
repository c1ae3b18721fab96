"""/volumes/{id}/files/...: the file manager's transfers and batch operations — content with Range and
validators, multipart upload, delete and chmod of a selection, search, and a selection as a tar.gz or zip
made on the fly. Listing, writing and single-entry operations are in api/volumes.py."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.api.volumes import Entry
from lightd.http import json_response, own_body_limit, read_model, validation_error
from lightd.http_files import conditions_of, send_chunks, send_content, upload_parts
from lightd.volumes import archive_stream, batch, search, transfer

routes = web.RouteTableDef()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ContentQuery(_Model):
    path: str = Field(min_length=1)


class UploadQuery(_Model):
    directory: str = ""
    """The folder the files go into (made if missing); the volume root by default."""


class DeleteFiles(_Model):
    root: str = ""
    """The folder the names are relative to (never deleted itself)."""
    files: list[str] = Field(min_length=1, max_length=batch.MAX_BATCH)


class ModeChange(_Model):
    file: str = Field(min_length=1)
    mode: str = Field(pattern=r"^(0o?)?[0-7]{3,4}$", description="octal, e.g. 0644 (no setuid, setgid or sticky)")


class ChmodFiles(_Model):
    root: str = ""
    files: list[ModeChange] = Field(min_length=1, max_length=batch.MAX_BATCH)


class SearchQuery(_Model):
    directory: str = ""
    """The folder searched (and up to 8 levels below it)."""
    pattern: str = Field(min_length=1, max_length=search.MAX_PATTERN)
    """A glob (`*.yml`, `level?.dat`, `[ab]*`) matched against whole names, or else a substring; case-insensitive."""


class ArchiveQuery(_Model):
    paths: list[str] = Field(min_length=1, max_length=archive_stream.MAX_SELECTION)
    """The selection: repeat the parameter (`?paths=a&paths=b`); a folder brings its whole tree."""
    format: Literal["tar.gz", "zip"] = "tar.gz"


class StoredFile(View):
    path: str
    size: int


class Uploaded(View):
    directory: str
    files: list[StoredFile]


class DeletedEntry(View):
    path: str
    deleted: Literal["file", "directory", "symlink", "other"]
    """What was removed (a link itself, never its target)."""


class FilesDeleted(View):
    root: str
    deleted: list[DeletedEntry]
    not_found: list[str]
    """Named entries that did not exist (nothing else was refused)."""


class ModeSet(View):
    path: str
    mode: str


class ModesSet(View):
    root: str
    files: list[ModeSet]


class Found(Entry):
    path: str
    """From the volume root."""


class SearchResults(View):
    directory: str
    pattern: str
    results: list[Found]
    truncated: bool
    """True when volumes.search_max_results or search_max_entries stopped the search: there may be more."""


UPLOAD_FORM = {
    "type": "object",
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "One part per file; each part's filename is its name (base name only)."}},
    "required": ["files"],
}


def _volume_id(request: web.Request) -> str:
    return request.match_info["volume_id"]


def upload_body_limit(request: web.Request) -> int:
    """An upload's body limit: every file it may hold, at their largest."""
    limits = request.config_dict[keys.CONFIG].volumes
    return limits.max_upload_files * (limits.max_upload_bytes + 64 * 1024)  # 64 KiB: a part's headers, generously


@routes.get("/volumes/{volume_id}/files/content")
@documented(query=ContentQuery, binary=True, also=(206, 304), description=(
    "Streams a regular file with Content-Length, ETag, Last-Modified and Accept-Ranges. `Range: bytes=a-b`, "
    "`bytes=a-` and `bytes=-n` answer 206 with Content-Range; a range starting past the end is 416 "
    "`range_not_satisfiable`; several ranges are answered with the whole file (200). `If-None-Match` with the "
    "current ETag answers 304; `If-Range` with another ETag or date sends the whole file. Links, FIFOs, "
    "devices and folders are 400."))
async def read_file(request: web.Request) -> web.StreamResponse:
    query = read_query(request, ContentQuery)
    content = await transfer.open_content(request.config_dict[keys.VOLUMES], _volume_id(request), query.path,
                                          conditions_of(request))
    return await send_content(request, content)


@routes.post("/volumes/{volume_id}/files/upload")
@own_body_limit(upload_body_limit)
@documented(query=UploadQuery, form=UPLOAD_FORM, status=201, response=Uploaded, description=(
    "multipart/form-data, one part per file (any field name; the part's filename, reduced to its base name, "
    "names the file, replacing a regular file of that name). Each file is streamed to a temp file and renamed "
    "into place when complete: at most volumes.max_upload_bytes (413) and within the disk limit (409 "
    "disk_quota_exceeded), with nothing partial left; files completed before a failure stay."))
async def upload(request: web.Request) -> web.Response:
    query = read_query(request, UploadQuery)
    result = await transfer.store_files(request.config_dict[keys.VOLUMES], _volume_id(request), query.directory,
                                        upload_parts(request))
    return json_response(result, status=201)


@routes.post("/volumes/{volume_id}/files/delete")
@documented(body=DeleteFiles, response=FilesDeleted)
async def delete_files(request: web.Request) -> web.Response:
    """Delete entries of one folder: files, links (never their targets) and folder trees; never the root."""
    body = await read_model(request, DeleteFiles)
    return json_response(await batch.delete_files(request.config_dict[keys.VOLUMES], _volume_id(request),
                                                  body.root, body.files))


@routes.post("/volumes/{volume_id}/files/chmod")
@documented(body=ChmodFiles, response=ModesSet)
async def chmod_files(request: web.Request) -> web.Response:
    """Set the octal modes of entries of one folder; links are refused, never followed; no setuid/setgid/sticky."""
    body = await read_model(request, ChmodFiles)
    changes = [(change.file, change.mode) for change in body.files]
    return json_response(await batch.chmod_files(request.config_dict[keys.VOLUMES], _volume_id(request),
                                                 body.root, changes))


@routes.get("/volumes/{volume_id}/files/search")
@documented(query=SearchQuery, response=SearchResults)
async def search_files(request: web.Request) -> web.Response:
    """Entries whose names match a glob or contain a substring, up to 8 folders down; node_modules, .git and
    the like are skipped."""
    query = read_query(request, SearchQuery)
    return json_response(await search.search(request.config_dict[keys.VOLUMES], _volume_id(request),
                                             query.directory, query.pattern))


@routes.get("/volumes/{volume_id}/files/archive")
@documented(query=ArchiveQuery, binary=tuple(archive_stream.MEDIA_TYPES.values()), description=(
    "A selection as a tar.gz (default) or zip, made while it is sent (chunked; nothing written to the volume). "
    "Links and special files inside are left out, never followed. A missing or refused path is 404/400 before "
    "the download starts; a failure after that closes the connection before the end of the archive."))
async def download_archive(request: web.Request) -> web.StreamResponse:
    try:
        query = ArchiveQuery.model_validate({**request.query, "paths": request.query.getall("paths", [])})
    except ValidationError as exc:
        raise validation_error(exc, "query") from None
    stream = await archive_stream.open_archive(request.config_dict[keys.VOLUMES], _volume_id(request), query.paths,
                                               query.format)
    try:
        return await send_chunks(request, stream.chunks(), content_type=stream.media_type, filename=stream.filename)
    finally:
        await stream.close()

