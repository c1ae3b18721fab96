"""create_app(services): the LXD panel front end as one aiohttp application — its routes, its error
shape (`{"detail": ...}`, FastAPI's) and the monitor broadcaster it owns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psutil
from aiohttp import web

from lightd import keys
from lightd.compat.base import CompatServices
from lightd.compat.lxd_panel.monitor import MONITOR, MonitorHub
from lightd.compat.lxd_panel.routes import QueryInvalid, routes
from lightd.compat.lxd_panel.views import VIEWS, InstanceViews
from lightd.errors import DockerUnavailable
from lightd.http_errors import ErrorAnswer, Failure, Origin, error_middleware
from lightd.tasks import TaskOwner

ENGINE_DOWN = "LXD服务不可用"
MONITOR_TASKS = web.AppKey("lxd_panel_tasks", TaskOwner)
"""The front end's own TaskOwner: the monitor broadcaster and one sender per socket."""


def detail_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """FastAPI's `{"detail": ...}`: lightd's error tree by type, aiohttp's own HTTP errors by reason,
    FastAPI-style 422s; an unhandled error a 500 with its request id."""
    error = failure.error
    if isinstance(error, QueryInvalid):
        return ErrorAnswer({"detail": error.errors}, status=422)
    if failure.origin is Origin.UNHANDLED:
        return ErrorAnswer({"detail": "Internal Server Error", "request_id": failure.request_id})
    if failure.origin is Origin.HTTP:
        return ErrorAnswer({"detail": failure.reason})
    if isinstance(error, DockerUnavailable):
        return ErrorAnswer({"detail": ENGINE_DOWN}, status=503)
    return ErrorAnswer({"detail": error.message})


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
    app = web.Application(middlewares=[error_middleware(detail_error_body, name="lxd panel")])
    app[keys.COMPAT] = services
    app[VIEWS] = InstanceViews(services)
    app.cleanup_ctx.append(_monitor_ctx)
    app.on_shutdown.append(_close_monitor)
    app.add_routes(routes)
    return app


