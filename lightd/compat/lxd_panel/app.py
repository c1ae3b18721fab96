"""LxdPanel(services): the LXD panel front end, built once per daemon (its views and its one monitor
broadcaster); its create_app() serves it with its routes and its error shape (`{"detail": ...}`, FastAPI's)."""

from __future__ import annotations

import asyncio
import contextlib
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


class LxdPanel:
    """The LXD panel front end of one daemon: its instance views and one monitor hub (one broadcaster for
    the monitor sockets of both applications, mounted and on its own port)."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.views = InstanceViews(services)
        self.tasks = TaskOwner("lxd-panel")
        """The monitor broadcaster and one sender per socket."""
        self.monitor = MonitorHub(services, self.views, self.tasks,
                                  services.config.compat.lxd_panel.monitor_interval_seconds)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """From after the daemon's services start to before they close: then the sockets and their tasks end."""
        try:
            # Primes psutil's CPU baseline: later calls measure since the previous one and never sleep.
            await asyncio.to_thread(psutil.cpu_percent, None)
            yield
        finally:
            try:
                await self.monitor.close()
            finally:
                await self.tasks.close(timeout=5.0)

    async def _close_sockets(self, app: web.Application) -> None:
        # on_shutdown of each application, before the daemon's services close (the hub's sockets of both
        # applications: the daemon is stopping).
        await self.monitor.close()

    def create_app(self) -> web.Application:
        """An aiohttp application serving the LXD panel API (seed lxd-panel-api.md) over this front end."""
        app = web.Application(middlewares=[error_middleware(detail_error_body, name="lxd panel")])
        app[keys.COMPAT] = self.services
        app[VIEWS] = self.views
        app[MONITOR] = self.monitor
        app.on_shutdown.append(self._close_sockets)
        app.add_routes(routes)
        return app
