"""create_app(services): the ProxiCloud front end as one aiohttp application — its routes, its error shape
(`{"success": false, "error": msg}`), the `X-Cache-Status` header, and its use of the daemon's one
ProxiCloudNode (vmids, activity, analytics collector)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from lightd import keys
from lightd.compat.base import CompatServices
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


class NodeLease:
    """This app's use of the shared node: taken at start-up, given back once — at shutdown (before the
    daemon's store closes) or, failing that, at cleanup."""

    def __init__(self, node: ProxiCloudNode) -> None:
        self.node = node
        self.held = False

    async def take(self) -> None:
        if not self.held:
            await self.node.acquire()
            self.held = True

    async def give_back(self) -> None:
        if self.held:
            self.held = False
            await self.node.release()


LEASE = web.AppKey("proxicloud_lease", NodeLease)


async def _node_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[LEASE].take()
    yield
    await app[LEASE].give_back()


async def _release_node(app: web.Application) -> None:
    # on_shutdown: a mounted sub-app's cleanup runs after the main app's, when the store is already closed.
    await app[LEASE].give_back()


def create_app(services: CompatServices) -> web.Application:
    """The ProxiCloud API (seed proxicloud-api.md) over lightd's services. Mounted and on its own port it
    is two applications sharing one ProxiCloudNode, so one analytics collector runs per daemon."""
    app = web.Application(middlewares=[error_middleware(envelope_error_body, name="proxicloud"), cache_status])
    app[keys.COMPAT] = services
    node = services.shared(NODE, lambda: ProxiCloudNode(services))
    app[NODE] = node
    app[VIEWS] = ContainerViews(services, node)
    app[LEASE] = NodeLease(node)
    app.cleanup_ctx.append(_node_ctx)
    app.on_shutdown.append(_release_node)
    app.add_routes(routes)
    return app
