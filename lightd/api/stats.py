"""GET /containers/{container_id}/stats: the latest stats sample (zeros with the state when none)."""

from __future__ import annotations

from aiohttp import web

from lightd import keys
from lightd.api.openapi import documented
from lightd.api.responses import json_response

routes = web.RouteTableDef()


@routes.get("/containers/{container_id}/stats")
@documented()
async def container_stats(request: web.Request) -> web.Response:
    container_id = request.match_info["container_id"]
    server = request.config_dict[keys.SERVERS].get(container_id)
    payload = await request.config_dict[keys.STATS].payload(server)
    return json_response({"internal_id": container_id, **payload})
