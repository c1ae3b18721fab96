"""GET /containers/{container_id}/stats: the latest stats sample (zeros with the state when none)."""

from __future__ import annotations

from aiohttp import web

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.http import json_response
from lightd.servers.models import RuntimeState

routes = web.RouteTableDef()


class NetworkBytes(View):
    rx_bytes: int
    tx_bytes: int


class ContainerStats(View):
    """`stats_payload` (lightd/servers/stats_sampler.py) with the server's id: the console socket's `stats` shape."""

    internal_id: str
    state: RuntimeState
    cpu_absolute: float
    """CPU use in percent of one core (200.0: two cores busy)."""
    memory_bytes: int
    memory_limit_bytes: int
    network: NetworkBytes
    disk_bytes: int
    """Bytes the server's volume uses (a cached figure)."""
    disk_limit_bytes: int
    """The server's limits.disk; 0: unlimited."""
    uptime: int
    """Milliseconds since the process started; 0 when offline."""


@routes.get("/containers/{container_id}/stats")
@documented(response=ContainerStats)
async def container_stats(request: web.Request) -> web.Response:
    container_id = request.match_info["container_id"]
    server = request.config_dict[keys.SERVERS].get(container_id)
    payload = await request.config_dict[keys.STATS].payload(server)
    return json_response({"internal_id": container_id, **payload})
