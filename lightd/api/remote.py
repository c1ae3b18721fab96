"""/remote: the remote-sync config (token masked), a live reload of it from config.json, and its status."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiohttp import web

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.auth import mask_token
from lightd.config import ConfigError, RemoteConfig, load_config
from lightd.errors import BadRequest, Conflict
from lightd.http import json_response

routes = web.RouteTableDef()


class RemoteView(View):
    """The `remote` section of config.json, its token masked."""

    enabled: bool
    url: str
    token: str
    """Masked: its first characters and an ellipsis; empty when none is set."""
    retry_initial_seconds: float
    retry_max_seconds: float
    outbox_max_rows: int
    request_timeout_seconds: float


class RemoteReloaded(View):
    message: str
    remote: RemoteView


class RemoteStatus(View):
    enabled: bool
    url: str
    queue_depth: int
    """Updates waiting in the outbox."""
    dropped: int
    """Oldest updates dropped past remote.outbox_max_rows."""
    missed_events: int
    """State events lost to event-bus overflow before they reached the outbox."""
    last_error: str | None
    last_error_at: datetime | None
    last_delivered_at: datetime | None
    panel_healthy: bool | None
    """null until the first delivery attempt."""


def remote_view(remote: RemoteConfig) -> dict[str, Any]:
    # SECURITY: the remote token is a credential for the panel; only its masked form leaves the daemon.
    return {**remote.model_dump(mode="json"), "token": mask_token(remote.token)}


@routes.get("/remote/config")
@documented(response=RemoteView)
async def get_config(request: web.Request) -> web.Response:
    return json_response(remote_view(request.config_dict[keys.CONFIG].remote))


@routes.post("/remote/config/reload")
@documented(response=RemoteReloaded)
async def reload_config(request: web.Request) -> web.Response:
    path = request.config_dict[keys.CONFIG_PATH]
    if path is None:
        raise Conflict("no config file: the daemon was started without one")
    try:
        # Reading a file blocks: off the event loop.
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    # Only the remote section is live-reloadable; the rest of the file needs a restart.
    request.config_dict[keys.CONFIG].remote = new.remote
    request.config_dict[keys.SYNC].reload(new.remote)
    return json_response({"message": "remote config reloaded", "remote": remote_view(new.remote)})


@routes.get("/remote/status")
@documented(response=RemoteStatus)
async def get_status(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.SYNC].status())
