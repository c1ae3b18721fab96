"""create_app(services): the ProxiCloud front end as one aiohttp application — its routes, its error shape
(`{"success": false, "error": msg}`), the `X-Cache-Status` header, and its use of the daemon's one
ProxiCloudNode (vmids, activity, analytics collector)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from lightd.access_log import escape
from lightd import keys
from lightd.api.responses import json_response
from lightd.compat.base import CompatServices
from lightd.compat.proxicloud.node import NODE, ProxiCloudNode
from lightd.compat.proxicloud.routes import routes
from lightd.compat.proxicloud.views import VIEWS, ContainerViews
from lightd.errors import DockerUnavailable, LightdError

log = logging.getLogger(__name__)

ENGINE_DOWN = "Docker engine unreachable"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"success": False, "error": message}, status=status, headers=headers)


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place this front end turns errors into HTTP: lightd's error tree by type (503 with the
    engine away), aiohttp's own HTTP errors, anything else a logged 500 without a traceback. Every answer
    carries `X-Cache-Status` (`offline` only when the engine is unreachable)."""
    request.app[NODE].start_collecting()  # in use: from now on analytics are sampled
    try:
        response = await handler(request)
    except DockerUnavailable:
        return error_response(ENGINE_DOWN, 503, {"X-Cache-Status": "offline"})
    except LightdError as exc:
        return error_response(exc.message, exc.status, {"X-Cache-Status": "online"})
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        headers = {"X-Cache-Status": "online"}
        if exc.headers.get("Allow"):
            headers["Allow"] = exc.headers["Allow"]
        return error_response(exc.reason, exc.status, headers)
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        log.exception("proxicloud: unhandled error in %s %s (request %s)", escape(request.method), escape(request.rel_url.path),
                      request_id)
        return json_response({"success": False, "error": "Internal Server Error", "request_id": request_id}, status=500)
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
    app = web.Application(middlewares=[envelope_errors])
    app[keys.COMPAT] = services
    node = services.shared(NODE, lambda: ProxiCloudNode(services))
    app[NODE] = node
    app[VIEWS] = ContainerViews(services, node)
    app[LEASE] = NodeLease(node)
    app.cleanup_ctx.append(_node_ctx)
    app.on_shutdown.append(_release_node)
    app.add_routes(routes)
    return app
