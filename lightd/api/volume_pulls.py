"""/volumes/{id}/files/pull: downloads from a URL into a volume, in the background."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.http import json_response, read_model

routes = web.RouteTableDef()


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    url: str = Field(min_length=1, max_length=8192)
    """An http or https URL. Its host (and every redirect's) must resolve to an address outside loopback,
    private, link-local, CGNAT, multicast and metadata networks, unless volumes.pull_allowed_networks admits it."""
    directory: str = ""
    """The folder of the volume the file is saved in (made if missing); default: the volume root."""
    file_name: str | None = Field(default=None, min_length=1, max_length=255)
    """Saved under this name; default: the answer's Content-Disposition file name, else the URL's last
    segment (either reduced to a base name), else "download". A file of that name is replaced."""


class PullError(View):
    error: str
    code: str
    """An error code: address_not_allowed, pull_failed, payload_too_large, disk_quota_exceeded..."""


class PullView(View):
    id: str
    volume_id: str
    url: str
    directory: str
    file_name: str | None
    """As asked (null: taken from the answer)."""
    state: Literal["running", "completed", "failed", "cancelled"]
    path: str | None
    """Where the file is saved in the volume, once the answer named it (null before)."""
    bytes: int
    """Bytes downloaded so far."""
    total: int | None
    """The answer's Content-Length (null when it sent none)."""
    error: PullError | None
    created_at: datetime
    finished_at: datetime | None


class PullList(View):
    pulls: list[PullView]
    """Running pulls and the last 20 finished ones, oldest first (a daemon restart forgets them)."""
    count: int


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["volume_id"], request.match_info["pull_id"]


@routes.post("/volumes/{volume_id}/files/pull")
@documented(body=PullRequest, status=202, response=PullView)
async def start_pull(request: web.Request) -> web.Response:
    """Download a URL into the volume in the background (at most volumes.pull_max_concurrent at once: 409
    too_many_pulls beyond)."""
    body = await read_model(request, PullRequest)
    pull = await request.config_dict[keys.PULLS].start(request.match_info["volume_id"], body.url, body.directory,
                                                       body.file_name)
    return json_response(pull, status=202)


@routes.get("/volumes/{volume_id}/files/pull")
@documented(response=PullList)
async def list_pulls(request: web.Request) -> web.Response:
    """The volume's pulls: running, and the last finished ones."""
    pulls = await request.config_dict[keys.PULLS].list(request.match_info["volume_id"])
    return json_response({"pulls": pulls, "count": len(pulls)})


@routes.get("/volumes/{volume_id}/files/pull/{pull_id}")
@documented(response=PullView)
async def get_pull(request: web.Request) -> web.Response:
    """One pull."""
    return json_response(await request.config_dict[keys.PULLS].get(*_ids(request)))


@routes.delete("/volumes/{volume_id}/files/pull/{pull_id}")
@documented(response=PullView)
async def cancel_pull(request: web.Request) -> web.Response:
    """Cancel a running pull: no file is left of it (409 for a finished one)."""
    return json_response(await request.config_dict[keys.PULLS].cancel(*_ids(request)))
