"""/remote: the remote-sync config (token masked), a live reload of it from config.json, and its status."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from lightd import keys
from lightd.api.openapi import documented
from lightd.api.responses import json_response
from lightd.auth import mask_token
from lightd.config import ConfigError, RemoteConfig, load_config
from lightd.errors import BadRequest, Conflict

routes = web.RouteTableDef()


def remote_view(remote: RemoteConfig) -> dict[str, Any]:
    # SECURITY: the remote token is a credential for the panel; only its masked form leaves the daemon.
    return {**remote.model_dump(mode="json"), "token": mask_token(remote.token)}


@routes.get("/remote/config")
@documented()
async def get_config(request: web.Request) -> web.Response:
    return json_response(remote_view(request.config_dict[keys.CONFIG].remote))


@routes.post("/remote/config/reload")
@documented()
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
@documented()
async def get_status(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.SYNC].status())
