"""GET /system: what this node is — versions, engine, CPUs, memory, disk, servers by state, port pool."""

from __future__ import annotations

from aiohttp import web

from lightd import keys
from lightd.api.openapi import documented
from lightd.api.responses import json_response
from lightd.system import system_report

routes = web.RouteTableDef()


@routes.get("/system")
@documented()
async def get_system(request: web.Request) -> web.Response:
    """The node's report; 200 with `"engine": null` and `engine_error` when the Docker engine is unreachable."""
    return json_response(await system_report(request.config_dict[keys.SERVERS], request.config_dict[keys.PORTS]))
