"""GET /metrics: the node's metrics in Prometheus text format (lightd/metrics.py), for a scraper that holds
the node token or the scrape-only `metrics.token` (no vendor Accept header: Prometheus does not send one)."""

from __future__ import annotations

import hmac

from aiohttp import web

from lightd import keys
from lightd.api.public import self_authenticated
from lightd.api.query import accepts_query
from lightd.api.route_docs import documented
from lightd.errors import NotFound, Unauthorized
from lightd.http import bearer_token
from lightd.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


def _allowed(request: web.Request) -> bool:
    token = bearer_token(request)
    if token is None:
        return False
    config = request.config_dict[keys.CONFIG]
    wanted = [t for t in (config.token, config.metrics.token) if t]
    # Each compared in constant time, all of them, whichever matches.
    matches = [hmac.compare_digest(token.encode(), t.encode()) for t in wanted]
    return any(matches)


@routes.get("/metrics")
@self_authenticated
@accepts_query(None)
@documented(media_type="text/plain", response={"type": "string"})
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (`Authorization: Bearer` the node token or `metrics.token`); 404 when
    `metrics.enabled` is false."""
    if not request.config_dict[keys.CONFIG].metrics.enabled:
        raise NotFound("metrics are disabled (metrics.enabled)")
    if not _allowed(request):
        raise Unauthorized("GET /metrics needs Authorization: Bearer <node token or metrics.token>")
    node = request.config_dict[keys.METRICS]
    await node.refresh(request.app)
    return web.Response(body=node.exposition(), headers={"Content-Type": CONTENT_TYPE,
                                                          "Cache-Control": "no-store"})
