"""ProxiCloud(services): the ProxiCloud front end, built once per daemon around its one ProxiCloudNode (vmids,
activity, analytics collector); its create_app() serves it with its routes, its error shape
(`{"success": false, "error": msg}`) and the `X-Cache-Status` header."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from lightd import keys
from lightd.compat.base import CompatServices
from lightd.compat.proxicloud.app_flavour import APP, Flavour
from lightd.compat.proxicloud.app_store import RECORDS, ProxiCloudAppStore
from lightd.compat.proxicloud.node import NODE, ProxiCloudNode
from lightd.compat.proxicloud.routes import routes
from lightd.compat.proxicloud.views import VIEWS, ContainerViews
from lightd.errors import DockerUnavailable
from lightd.http_errors import ErrorAnswer, Failure, Origin, error_middleware

ENGINE_DOWN = "Docker engine unreachable"


ONLINE = {"X-Cache-Status": "online"}


def envelope_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """`{"success": false, "error": msg}`: lightd's error tree by type (503 with the engine away), aiohttp's
    own HTTP errors by reason; an unhandled error a 500 with its request id. `X-Cache-Status` is `offline`
    only when the engine is unreachable."""
    error = failure.error
    if failure.origin is Origin.UNHANDLED:
        return ErrorAnswer({"success": False, "error": "Internal Server Error", "request_id": failure.request_id})
    if failure.origin is Origin.HTTP:
        return ErrorAnswer({"success": False, "error": failure.reason}, headers=ONLINE)
    if isinstance(error, DockerUnavailable):
        return ErrorAnswer({"success": False, "error": ENGINE_DOWN}, status=503, headers={"X-Cache-Status": "offline"})
    return ErrorAnswer({"success": False, "error": error.message}, headers=ONLINE)


@web.middleware
async def cache_status(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Starts the analytics collector on first use; every answer carries `X-Cache-Status` (errors get
    theirs from envelope_error_body)."""
    request.app[NODE].start_collecting()  # in use: from now on analytics are sampled
    response = await handler(request)
    response.headers.setdefault("X-Cache-Status", "online")
    return response


DOC = Flavour(envelope_error_body, cache_status, (routes,), records=False)


class ProxiCloud:
    """The ProxiCloud front end of one daemon: one ProxiCloudNode (so one activity follower and one analytics
    collector) and its views, whichever application a request arrives on (mounted or on its own port)."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.node = ProxiCloudNode(services)
        self.views = ContainerViews(services, self.node)
        self.records = ProxiCloudAppStore(lambda: services.store)
        """The web app flavour's projects, volume names, attachments and snapshots (tables made on first write)."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The node's tasks, from after the daemon's services start to before they close."""
        try:
            await self.node.start()
            yield
        finally:
            await self.node.close()

    def create_app(self) -> web.Application:
        """An aiohttp application serving the ProxiCloud API of the configured flavour over this front end:
        the seed document's (proxicloud-api.md) or the real web app's (app_flavour.py)."""
        flavour = APP if self.services.config.compat.proxicloud.flavour == "app" else DOC
        app = web.Application(middlewares=[error_middleware(flavour.error_body, name="proxicloud"), flavour.header])
        app[keys.COMPAT] = self.services
        app[NODE] = self.node
        app[VIEWS] = self.views
        if flavour.records:
            app[RECORDS] = self.records
        for table in flavour.routes:
            app.add_routes(table)
        return app
