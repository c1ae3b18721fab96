"""Signed one-shot URLs for browsers: minted by the node token (`POST /auth/signed-urls`), served without it
by `GET /download/file`, `POST /upload/file` and `GET /download/backup` (self-authenticated by `?token=`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lightd import keys
from lightd.api.public import self_authenticated
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.api.volume_files import UPLOAD_FORM, Uploaded, upload_body_limit
from lightd.errors import Forbidden, ServiceUnavailable
from lightd.http import json_response, own_body_limit, read_model
from lightd.http_files import conditions_of, send_chunks, send_content, upload_parts
from lightd.signed_urls import ROUTES, Grant, SignedPurpose, SignedUrls, Target
from lightd.timestamps import rfc3339
from lightd.volumes import transfer
from lightd.volumes.sandbox import split_path

routes = web.RouteTableDef()
DEFAULT_TTL_SECONDS = 900
ARCHIVE_SUFFIX = {"zstd": "tar.zst", "gzip": "tar.gz"}


class SignedUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    purpose: SignedPurpose
    volume_id: str | None = Field(default=None, min_length=1, max_length=64)
    """The volume (file purposes); or give container_id, whose volume is used."""
    container_id: str | None = Field(default=None, min_length=1, max_length=64)
    path: str | None = None
    """file-download: the file (required); file-upload: the folder files go into (default: the volume root)."""
    backup_id: str | None = Field(default=None, min_length=1, max_length=64)
    """backup-download: the backup (with container_id)."""
    ttl_seconds: int | None = Field(default=None, strict=True, ge=1)
    """Seconds the URL stays valid: 1 to tokens.signed_url_max_ttl_seconds (3600 unless configured); default
    900 (or that maximum, if smaller)."""

    @model_validator(mode="after")
    def _target(self) -> SignedUrlRequest:
        if self.purpose == "backup-download":
            if self.container_id is None or self.backup_id is None:
                raise ValueError("backup-download needs container_id and backup_id")
            if self.volume_id is not None or self.path is not None:
                raise ValueError("backup-download takes no volume_id or path")
            return self
        if (self.volume_id is None) == (self.container_id is None):
            raise ValueError("give volume_id or container_id (one of them)")
        if self.backup_id is not None:
            raise ValueError("backup_id is for backup-download only")
        if self.purpose == "file-download" and not self.path:
            raise ValueError("file-download needs the path of the file")
        return self


class SignedUrlCreated(View):
    url: str
    """The one-shot URL, on the address this request came to; hand it to a browser as is."""
    id: str
    """The URL's token id (`jti`)."""
    purpose: SignedPurpose
    expires_at: datetime


class FileQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    volume_id: str
    path: str
    token: str

    def target(self) -> Target:
        return Target("file-download", volume_id=self.volume_id, path=self.path)


class UploadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    volume_id: str
    directory: str = ""
    token: str

    def target(self) -> Target:
        return Target("file-upload", volume_id=self.volume_id, path=self.directory)


class BackupQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    container_id: str
    backup_id: str
    token: str

    def target(self) -> Target:
        return Target("backup-download", container_id=self.container_id, backup_id=self.backup_id)


SignedQuery = TypeVar("SignedQuery", FileQuery, UploadQuery, BackupQuery)


async def _checked(request: web.Request, model: type[SignedQuery]) -> tuple[SignedQuery, SignedUrls, Grant]:
    """A signed URL's query, and the grant its token gives to the target the query names (401/403 otherwise)."""
    query = read_query(request, model)
    signer: SignedUrls = request.config_dict[keys.SIGNED_URLS]
    return query, signer, await signer.check(query.token, query.target())


async def _target(request: web.Request, body: SignedUrlRequest) -> Target:
    """The target the request names, checked to exist (404 otherwise)."""
    services = request.config_dict
    if body.purpose == "backup-download":
        services[keys.SERVERS].get(body.container_id or "")  # NotFound for an unknown server
        await _backups(request).get(body.container_id or "", body.backup_id or "")
        return Target(body.purpose, container_id=body.container_id, backup_id=body.backup_id)
    volume_id = body.volume_id
    if body.container_id is not None:
        volume_id = services[keys.SERVERS].get(body.container_id).spec.volume_id
    await services[keys.VOLUMES].record(volume_id or "")
    path = "/".join(split_path(body.path or ""))  # 400 for a bad path now, not when the browser comes
    return Target(body.purpose, volume_id=volume_id, path=path, container_id=body.container_id)


def _backups(request: web.Request) -> Any:
    backups = request.config_dict.get(keys.BACKUPS)
    if backups is None:
        raise ServiceUnavailable("backups are not available on this node")
    return backups


@routes.post("/auth/signed-urls")
@documented(body=SignedUrlRequest, status=201, response=SignedUrlCreated)
async def create_signed_url(request: web.Request) -> web.Response:
    """Mint a signed one-shot URL for a browser (node token only)."""
    if not request[keys.PRINCIPAL].node:
        raise Forbidden("only the node token can mint signed URLs")
    body = await read_model(request, SignedUrlRequest)
    signer: SignedUrls = request.config_dict[keys.SIGNED_URLS]
    ttl = body.ttl_seconds if body.ttl_seconds is not None else min(DEFAULT_TTL_SECONDS, signer.max_ttl)
    issued = await signer.issue(await _target(request, body), ttl)
    query = {**issued.target.query(), "token": issued.token}
    url = request.url.origin().with_path(ROUTES[body.purpose]).with_query(query)
    return json_response({"url": str(url), "id": issued.id, "purpose": body.purpose,
                          "expires_at": rfc3339(issued.expires_at)}, status=201)


@routes.get("/download/file", allow_head=False)  # a HEAD (a link preview) must not use up the URL
@self_authenticated
@documented(query=FileQuery, binary=True, also=(206, 304), description=(
    "A file of a volume, with a signed one-shot URL from POST /auth/signed-urls (purpose file-download); "
    "Range and If-None-Match as GET /volumes/{volume_id}/files/content. 401 signed_url_invalid, "
    "signed_url_expired or signed_url_used; 403 signed_url_mismatch for another purpose or target."))
async def download_file(request: web.Request) -> web.StreamResponse:
    query, signer, grant = await _checked(request, FileQuery)
    content = await transfer.open_content(request.config_dict[keys.VOLUMES], query.volume_id, query.path,
                                          conditions_of(request))
    try:
        await signer.consume(grant)
    except BaseException:
        content.close()
        raise
    return await send_content(request, content)


@routes.post("/upload/file")
@self_authenticated
@own_body_limit(upload_body_limit)
@documented(query=UploadQuery, form=UPLOAD_FORM, status=201, response=Uploaded, description=(
    "multipart/form-data files into a folder of a volume, with a signed one-shot URL (purpose file-upload); "
    "the rules of POST /volumes/{volume_id}/files/upload. The URL is used up when the upload starts."))
async def upload_file(request: web.Request) -> web.Response:
    query, signer, grant = await _checked(request, UploadQuery)
    await signer.consume(grant)
    result = await transfer.store_files(request.config_dict[keys.VOLUMES], query.volume_id, query.directory,
                                        upload_parts(request))
    return json_response(result, status=201)


@routes.get("/download/backup", allow_head=False)
@self_authenticated
@documented(query=BackupQuery, binary=True, description=(
    "A completed backup's archive, with a signed one-shot URL (purpose backup-download)."))
async def download_backup(request: web.Request) -> web.StreamResponse:
    query, signer, grant = await _checked(request, BackupQuery)
    backups = _backups(request)
    backup = await backups.get(query.container_id, query.backup_id)
    chunks, _size = await backups.open_for_download(query.container_id, query.backup_id)
    try:
        await signer.consume(grant)
        name = f"{query.backup_id}.{ARCHIVE_SUFFIX.get(backup.get('compression'), 'tar')}"
        return await send_chunks(request, chunks, content_type="application/octet-stream", filename=name)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]

