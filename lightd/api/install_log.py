"""GET /containers/{id}/install-log: the output of the last install script run, as text."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import documented
from lightd.servers.install_log import install_log_text

routes = web.RouteTableDef()


class InstallLogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    tail: int | None = Field(default=None, ge=1, le=100_000)
    """Only the last this many lines (default: the whole log, at most console.install_log_bytes)."""


@routes.get("/containers/{container_id}/install-log")
@documented(query=InstallLogQuery, media_type="text/plain", response={"type": "string"})
async def install_log(request: web.Request) -> web.Response:
    """The last install run's output (text/plain; also while it runs); 404 when no install script has run."""
    q = read_query(request, InstallLogQuery)
    server = request.config_dict[keys.SERVERS].get(request.match_info["container_id"])
    text = await install_log_text(server, q.tail)
    # SECURITY: tenant output: served as plain text that a browser never sniffs into HTML.
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
