"""create_app(services): the LXD panel front end as one aiohttp application — its routes, its error
shape (`{"detail": ...}`, FastAPI's) and the monitor broadcaster it owns."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psutil
from aiohttp import web

from lightd.access_log import escape
from lightd import keys
from lightd.api.responses import json_response
from lightd.compat.base import CompatServices
from lightd.compat.lxd_panel.monitor import MONITOR, MonitorHub
from lightd.compat.lxd_panel.routes import QueryInvalid, routes
from lightd.compat.lxd_panel.views import VIEWS, InstanceViews
from lightd.errors import DockerUnavailable, LightdError
from lightd.tasks import TaskOwner

log = logging.getLogger(__name__)

ENGINE_DOWN = "LXD服务不可用"
MONITOR_TASKS = web.AppKey("lxd_panel_tasks", TaskOwner)
"""The front end's own TaskOwner: the monitor broadcaster and one sender per socket."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def detail_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place this front end turns errors into HTTP: lightd's error tree by type, aiohttp's own
    HTTP errors, FastAPI-style 422s; anything else a logged 500 without a traceback."""
    try:
        return await handler(request)
    except QueryInvalid as exc:
        return json_response({"detail": exc.errors}, status=422)
    except DockerUnavailable:
        return json_response({"detail": ENGINE_DOWN}, status=503)
    except LightdError as exc:
        return json_response({"detail": exc.message}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        allow = exc.headers.get("Allow")
        return json_response({"detail": exc.reason}, status=exc.status, headers={"Allow": allow} if allow else None)
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        log.exception("lxd panel: unhandled error in %s %s (request %s)", escape(request.method), escape(request.rel_url.path), request_id)
        return json_response({"detail": "Internal Server Error", "request_id": request_id}, status=500)


async def _monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    services: CompatServices = app[keys.COMPAT]
    tasks = TaskOwner("lxd-panel")
    # Primes psutil's CPU baseline: later calls measure since the previous one and never sleep.
    await asyncio.to_thread(psutil.cpu_percent, None)
    app[MONITOR] = MonitorHub(services, app[VIEWS], tasks, services.config.compat.lxd_panel.monitor_interval_seconds)
    app[MONITOR_TASKS] = tasks
    yield
    await tasks.close()


async def _close_monitor(app: web.Application) -> None:
    # on_shutdown: the sockets go first, then the broadcaster, before the daemon's services close.
    if MONITOR in app:
        await app[MONITOR].close()
        await app[MONITOR_TASKS].close(timeout=5.0)


def create_app(services: CompatServices) -> web.Application:
    """The LXD panel API (seed lxd-panel-api.md) over lightd's services (`app[keys.COMPAT]` is set by
    lightd.compat.serving; it is set here too so the app stands alone)."""
    app = web.Application(middlewares=[detail_errors])
    app[keys.COMPAT] = services
    app[VIEWS] = InstanceViews(services)
    app.cleanup_ctx.append(_monitor_ctx)
    app.on_shutdown.append(_close_monitor)
    app.add_routes(routes)
    return app


