"""`/api/health`, `/api/system/info`, `/api/files/*` and `/api/jobs/*`."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import psutil
from aiohttp import web

import lightd
from lightd.compat.base import services_of
from lightd.compat.container_codes.filearea import FileArea, area_path, mime_type
from lightd.compat.container_codes.jobs import JOB_RUNNER, JobRunner, job_view
from lightd.compat.container_codes.models import JobCreate, iso
from lightd.compat.container_codes.updates import UPDATES
from lightd.errors import LightdError, NotFound, PayloadTooLarge, ValidationFailed
from lightd.http import json_response, query_int, read_model
from lightd.http_files import send_content
from lightd.volumes.transfer import Content, open_content

routes = web.RouteTableDef()
FILE_AREA = web.AppKey("container_codes_files", FileArea)
JOB_STATUSES = {"queued", "running", "completed", "failed", "cancelled"}
FIELD_MAX = 4096
"""Bytes of an upload's `path` or `permissions` field."""


def _files(request: web.Request) -> FileArea:
    return request.config_dict[FILE_AREA]


def _jobs(request: web.Request) -> JobRunner:
    return request.config_dict[JOB_RUNNER]


# -- core --------------------------------------------------------------------------------------------
@routes.get("/api/health", name="health")
async def health(request: web.Request) -> web.Response:
    services = services_of(request)
    try:
        await services.store.schema_version()
        database = "healthy"
    except Exception:  # noqa: BLE001 - a health check reports, it does not fail
        database = "unhealthy"
    docker = "healthy" if await services.servers.engine.available() else "unhealthy"
    healthy = database == docker == "healthy"
    return json_response({
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": iso(time.time()),
        "checks": {"database": database, "redis": "disabled", "docker": docker},
        "uptime": int(time.time() - services.tokens.booted_at),
    })


@routes.get("/api/system/info", name="system_info")
async def system_info(request: web.Request) -> web.Response:
    services = services_of(request)
    process = psutil.Process()
    memory = await asyncio.to_thread(lambda: process.memory_info().rss)
    return json_response({
        "version": getattr(lightd, "__version__", "0"),
        "uptime": int(time.time() - services.tokens.booted_at),
        "memory_usage": memory,
        "cpu_usage": psutil.cpu_percent(None),  # since the previous call: never sleeps
        "active_connections": len(request.config_dict[UPDATES]),
        "containers": len(services.servers),
    })


# -- files -------------------------------------------------------------------------------------------
def _etag(entry: dict[str, Any]) -> str:
    return f'"{entry["size"]}-{entry["modified"]}"'


def _mode(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        mode = int(raw, 8)
    except ValueError:
        raise ValidationFailed("permissions: must be octal, e.g. 644", details={"field": "permissions"}) from None
    if not 0 <= mode <= 0o777:
        raise ValidationFailed("permissions: must be between 000 and 777", details={"field": "permissions"})
    return mode


@routes.post("/api/files/upload", name="file_upload")
async def upload(request: web.Request) -> web.Response:
    if not request.content_type.startswith("multipart/"):
        raise ValidationFailed("expected multipart/form-data with a 'file' part", details={"field": "file"})
    services = services_of(request)
    limit = services.config.volumes.max_write_bytes
    data: bytes | None = None
    filename = ""
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                filename = part.filename or "upload"
                chunks, size = [], 0
                while chunk := await part.read_chunk(256 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"file: larger than the {limit} byte limit")
                    chunks.append(chunk)
                data = b"".join(chunks)
            elif part.name in ("path", "permissions"):
                value = await part.read_chunk(FIELD_MAX + 1)
                if len(value) > FIELD_MAX or await part.read_chunk(1):
                    raise ValidationFailed(f"{part.name}: longer than {FIELD_MAX} bytes", details={"field": part.name})
                fields[part.name] = value.decode("utf-8", "replace")
    except (ValueError, AssertionError) as exc:
        raise ValidationFailed(f"malformed multipart body: {exc}") from None
    if data is None:
        raise ValidationFailed("file: missing", details={"field": "file"})
    path = fields.get("path") or f"uploads/{filename.replace('/', '_')}"
    await _files(request).write(path, data, _mode(fields.get("permissions")))
    info = await _files(request).info(path)
    return json_response(_info_view(area_path(path), info), status=201)


def _info_view(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": "/" + path,
        "size": entry["size"],
        "mime_type": mime_type(path) if entry["type"] == "file" else "inode/directory",
        "created_at": entry["modified"],  # the volume sandbox reports no birth time
        "modified_at": entry["modified"],
        "etag": _etag(entry),
        "permissions": entry["mode"][-3:],
        "type": entry["type"],
    }


@routes.get("/api/files/info/{path:.+}", name="file_info")
async def file_info(request: web.Request) -> web.Response:
    path = area_path(request.match_info["path"])
    return json_response(_info_view(path, await _files(request).info(path)))


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b` / `bytes=a-` / `bytes=-n` -> (start, end inclusive); None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), int(last) if last else size - 1
    except ValueError:
        return None
    end = min(end, size - 1)
    return (start, end) if 0 <= start <= end else None


@routes.get("/api/files/download/{path:.+}", name="file_download")
async def download(request: web.Request) -> web.StreamResponse:
    files = _files(request)
    path = area_path(request.match_info["path"])
    entry = await files.info(path)
    if entry["type"] != "file":
        raise NotFound(f"file /{path} not found (not a regular file)")
    etag = _etag(entry)
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return await send_file(request, await files.open(path), mime_type(path), etag)


async def send_file(request: web.Request, content: Content, content_type: str, etag: str | None = None) -> web.StreamResponse:
    """Send an open volume file (and close it) in the seed's shape: its type, its own ETag (if any), no
    Last-Modified or Content-Disposition; one `Range` by `_byte_range`'s rules, 416 with no body otherwise."""
    if "Range" in request.headers and content.size:
        wanted = _byte_range(request.headers["Range"], content.size)
        if wanted is None:
            content.close()
            return web.Response(status=416, headers={"Content-Range": f"bytes */{content.size}"})
        content.select(wanted[0], wanted[1] - wanted[0] + 1)
    headers = {**content.range_headers, **({"ETag": etag} if etag else {})}
    return await send_content(request, content, disposition=None, content_type=content_type, headers=headers)


@routes.get("/api/files/list", name="file_list_root")
@routes.get("/api/files/list/{path:.*}", name="file_list")
async def list_files(request: web.Request) -> web.Response:
    """lightd extension: a folder's entries."""
    listing = await _files(request).list(request.match_info.get("path", ""))
    return json_response({"path": "/" + listing["path"], "entries": listing["entries"]})


@routes.delete("/api/files/{path:.+}", name="file_delete")
async def delete_file(request: web.Request) -> web.Response:
    """lightd extension: delete a file, a link (never its target) or a folder tree."""
    result = await _files(request).delete(request.match_info["path"])
    return json_response({"path": "/" + result["path"], "deleted": result["deleted"]})


# -- jobs --------------------------------------------------------------------------------------------
@routes.post("/api/jobs", name="job_create")
async def submit_job(request: web.Request) -> web.Response:
    body = await read_model(request, JobCreate)
    row = await _jobs(request).submit(body)
    return json_response({
        "job_id": row["id"], "status": row["status"], "created_at": iso(row["created_at"]), "estimated_start": None,
    }, status=202)


@routes.get("/api/jobs", name="job_list")
async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ValidationFailed(f"status: must be one of {', '.join(sorted(JOB_STATUSES))}", details={"field": "status"})
    since = request.query.get("created_since")
    created_since = None
    if since is not None:
        try:
            created_since = float(since)
        except ValueError:
            try:
                created_since = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise ValidationFailed("created_since: a UNIX time or an ISO 8601 timestamp",
                                       details={"field": "created_since"}) from None
    limit = query_int(request, "limit", 50, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    rows, total = await _jobs(request).store.list_jobs(status=status, created_since=created_since, limit=limit, offset=offset)
    return json_response({"jobs": [job_view(r) for r in rows], "total": total, "limit": limit, "offset": offset})


@routes.get("/api/jobs/{id}", name="job_get")
async def get_job(request: web.Request) -> web.Response:
    return json_response(job_view(await _jobs(request).get(request.match_info["id"])))


@routes.post("/api/jobs/{id}/cancel", name="job_cancel")
async def cancel_job(request: web.Request) -> web.Response:
    services = services_of(request)
    jobs = _jobs(request)
    row = await services.run_owned(jobs.cancel(request.match_info["id"]), "container_codes:cancel")
    return json_response(job_view(row))


@routes.post("/api/jobs/{id}/retry", name="job_retry")
async def retry_job(request: web.Request) -> web.Response:
    return json_response(job_view(await _jobs(request).retry(request.match_info["id"])), status=202)


@routes.get("/api/jobs/{id}/logs", name="job_logs")
async def job_logs(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    row = await jobs.get(request.match_info["id"])
    tail = query_int(request, "tail", 0, 0, 1_000_000)
    lines = jobs.logs(row)
    if tail:
        lines = lines[-tail:]
    return json_response({"job_id": row["id"], "status": row["status"], "lines": lines, "count": len(lines)})


@routes.get("/api/jobs/{id}/output", name="job_output")
async def job_output(request: web.Request) -> web.Response:
    row = await _jobs(request).get(request.match_info["id"])
    return json_response({"job_id": row["id"], "files": row["output_files"], "total": len(row["output_files"])})


def output_path(row: dict[str, Any], wanted: str) -> str | None:
    """The listed output file `{file}` names: its listed path (`output/out.json`), or that path less the
    seed's output folder (`out.json`, as `/api/jobs/{id}/output/` already says "output"); None if neither."""
    listed = {f["path"] for f in row["output_files"]}
    return next((path for path in (wanted, f"output/{wanted}") if path in listed), None)


@routes.get("/api/jobs/{id}/output/{file:.+}", name="job_output_file")
async def job_output_file(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    row = await _jobs(request).get(request.match_info["id"])
    wanted = area_path(request.match_info["file"])
    # Only files the job reported as outputs are served (never anything else of its volume). The job exists:
    # what is missing is the file (`output_file` in the details makes it NOT_FOUND, not JOB_NOT_FOUND).
    path = output_path(row, wanted) if row["volume_id"] else None
    missing = {"job_id": row["id"], "output_file": "/" + wanted}
    if path is None:
        raise NotFound(f"job {row['id']} has no output file /{wanted}", details=missing)
    try:
        content = await open_content(services.volumes, row["volume_id"], path)
    except LightdError:
        raise NotFound(f"output file /{path} of job {row['id']} is gone", details=missing) from None
    return await send_file(request, content, mime_type(path))

