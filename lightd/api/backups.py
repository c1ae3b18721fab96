"""/containers/{id}/backups: a server's backups (local or S3) — made and restored in the background."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.http import json_response, read_model
from lightd.servers.server import Server

routes = web.RouteTableDef()
PATH = "/containers/{container_id}/backups"


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    adapter: Literal["local", "s3"] = "local"
    ignore: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=1000)
    """gitignore-style patterns of what to leave out (with those of the volume's `.lightdignore`)."""
    name: str | None = Field(default=None, min_length=1, max_length=200)
    compression: Literal["zstd", "gzip"] | None = None
    """Default: `backups.compression`."""


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    truncate: bool = Field(default=False, strict=True)
    """Empty the volume first (else the backup's files are written over what is there, the rest kept)."""


class BackupView(View):
    """One backup: `backup_view` (lightd/backups/service.py)."""

    backup_id: str
    container_id: str
    name: str
    adapter: Literal["local", "s3"]
    compression: Literal["zstd", "gzip"]
    status: Literal["running", "completed", "failed"]
    size: int | None
    """Bytes of the archive (once completed)."""
    sha256: str | None
    files: int | None
    skipped_count: int | None
    """Links and special files left out (never followed)."""
    error: str | None
    ignore: list[str]
    created_at: datetime
    completed_at: datetime | None
    restore_status: Literal["running", "completed", "failed"] | None
    """How the last restore from this backup went."""
    restore_error: str | None
    restored_at: datetime | None


class BackupList(View):
    backups: list[BackupView]
    count: int


class BackupDeleted(View):
    deleted: BackupView


def _server(request: web.Request) -> Server:
    return request.config_dict[keys.SERVERS].get(request.match_info["container_id"])


@routes.post(PATH)
@documented(body=BackupRequest, status=202, response=BackupView,
            summary="Start a backup (202: running; backup_* events follow)")
async def create_backup(request: web.Request) -> web.Response:
    body = await read_model(request, BackupRequest, allow_empty=True)
    view = await request.config_dict[keys.BACKUPS].create(_server(request), body.adapter, body.ignore, body.name,
                                                          body.compression)
    return json_response(view, status=202)


@routes.get(PATH)
@documented(response=BackupList)
async def list_backups(request: web.Request) -> web.Response:
    backups = await request.config_dict[keys.BACKUPS].list(_server(request).id)
    return json_response({"backups": backups, "count": len(backups)})


@routes.get(PATH + "/{backup_id}")
@documented(response=BackupView)
async def get_backup(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.BACKUPS].get(_server(request).id, request.match_info["backup_id"]))


@routes.delete(PATH + "/{backup_id}")
@documented(response=BackupDeleted)
async def delete_backup(request: web.Request) -> web.Response:
    deleted = await request.config_dict[keys.BACKUPS].delete(_server(request).id, request.match_info["backup_id"])
    return json_response({"deleted": deleted})


@routes.post(PATH + "/{backup_id}/restore")
@documented(body=RestoreRequest, status=202, response=BackupView,
            summary="Restore into the offline server's volume (202: the server is `restoring`)")
async def restore_backup(request: web.Request) -> web.Response:
    body = await read_model(request, RestoreRequest, allow_empty=True)
    view = await request.config_dict[keys.BACKUPS].restore(_server(request), request.match_info["backup_id"], body.truncate)
    return json_response(view, status=202)
