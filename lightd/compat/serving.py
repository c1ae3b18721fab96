"""Serving the compat front ends. Each is built once per daemon (a `FrontEnd`: its state and background
work), mounted on the main port under /compat/<name> (node token required there) and, when enabled,
served on its own port so an unmodified client of that API works with its default base URL.

aiohttp serves an application in one place only (`add_subapp` freezes it and prefixes its routes), so the
front end makes one application for the mount and another for its own port, both over the same state.
Its background work and its own-port listener are cleanup_ctx of the main application, after the core
services: started after them, stopped before them, in one ordered unwind that goes on past a failing step."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from lightd import cors, keys
from lightd.access_log import server_log_options
from lightd.compat.base import CompatServices
from lightd.compat.static_files import StaticFiles, static_files_middleware
from lightd.config import Config
from lightd.config_features import CompatFrontEnd
from lightd.http import ascii_int, bearer_token

log = logging.getLogger(__name__)


class FrontEnd(Protocol):
    """One compat front end of a daemon, built once from the daemon's services."""

    services: CompatServices

    def create_app(self) -> web.Application:
        """A new aiohttp application over this front end's state: its routes, error shape, middlewares."""
        ...

    def running(self) -> AbstractAsyncContextManager[None]:
        """Its background work, from after the daemon's services start to before they close."""
        ...


@dataclass(frozen=True)
class FrontEndSpec:
    name: str  # the key under config.compat
    prefix: str  # where it is mounted on the main port
    factory: str  # "module:Class", the FrontEnd, built from CompatServices
    env_host: str | None = None  # environment variables the original project honours
    env_port: str | None = None

    def build(self, services: CompatServices) -> FrontEnd:
        module, _, name = self.factory.partition(":")
        front_end: FrontEnd = getattr(importlib.import_module(module), name)(services)
        return front_end

    def application(self, front_end: FrontEnd) -> web.Application:
        """One application serving `front_end` (on the main port's mount or on its own port)."""
        app = front_end.create_app()
        app[keys.FRONT_END] = self.name
        app[keys.COMPAT] = front_end.services
        # Preflights answered just inside the front end's error middleware (first in every front end, so a
        # refusal is in its shape), before its authentication.
        cors.install(app, getattr(front_end.services.config.compat, self.name).cors_origins)
        app.middlewares.insert(1, cors.middleware)
        # A raising on_shutdown step ends aiohttp's shutdown there, before any cleanup_ctx (the store's
        # among them): each of this front end's steps is logged instead, and the unwind goes on.
        app.on_shutdown[:] = [_logged_step(self.name, step) for step in app.on_shutdown]
        return app


def _logged_step(name: str, step: Callable[[web.Application], Awaitable[None]]) -> Callable[[web.Application], Awaitable[None]]:
    async def logged(app: web.Application) -> None:
        try:
            await step(app)
        except Exception:
            log.exception("compat %s: a shutdown step failed", name)

    return logged


FRONT_ENDS: tuple[FrontEndSpec, ...] = (
    FrontEndSpec("lxc_tools", "/compat/lxc-tools", "lightd.compat.lxc_tools.app:LxcTools", "LXC_API_HOST", "LXC_API_PORT"),
    FrontEndSpec("lxd_panel", "/compat/lxd-panel", "lightd.compat.lxd_panel.app:LxdPanel", "API_HOST", "API_PORT"),
    FrontEndSpec("proxicloud", "/compat/proxicloud", "lightd.compat.proxicloud.app:ProxiCloud", "HOST", "PORT"),
    FrontEndSpec("container_codes", "/compat/container-codes", "lightd.compat.container_codes.app:ContainerCodes"),
)


def build_front_ends(main_app: web.Application, config: Config) -> None:
    """Build each front end in use (mounted, enabled on its own port, or both) once, and mount it under its
    prefix when config.compat.mount_on_main."""
    services = CompatServices(main_app)
    built: dict[str, FrontEnd] = {}
    for spec in FRONT_ENDS:
        settings: CompatFrontEnd = getattr(config.compat, spec.name)
        if not (config.compat.mount_on_main or settings.enabled):
            continue
        built[spec.name] = front_end = spec.build(services)
        if config.compat.mount_on_main:
            main_app.add_subapp(spec.prefix, spec.application(front_end))
    main_app[keys.COMPAT_FRONT_ENDS] = built


async def front_ends_ctx(main_app: web.Application) -> AsyncIterator[None]:
    """Every front end's background work (a cleanup_ctx after the core services'). At close each front end is
    ended even if another one's end raises: a failing front end never keeps the daemon's store open."""
    async with contextlib.AsyncExitStack() as stack:
        for front_end in main_app[keys.COMPAT_FRONT_ENDS].values():
            await stack.enter_async_context(front_end.running())
        yield


async def front_end_listeners_ctx(main_app: web.Application) -> AsyncIterator[None]:
    """Each front end enabled in config on its own port (a cleanup_ctx after front_ends_ctx): it listens only
    while the front end and the daemon's services run, and stops (its sockets closed, its requests done)
    before they close."""
    config: Config = main_app[keys.CONFIG]
    async with contextlib.AsyncExitStack() as stack:
        for spec in FRONT_ENDS:
            settings: CompatFrontEnd = getattr(config.compat, spec.name)
            if not settings.enabled:
                continue
            host, port = listen_address(spec, settings)
            runner = _own_port_runner(spec, main_app[keys.COMPAT_FRONT_ENDS][spec.name], settings, host)
            stack.push_async_callback(runner.cleanup)  # after a failed setup too: it ends what started
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            log.info("compat front end %s listening on http://%s:%d", spec.name, host, port)
        yield


def _own_port_runner(spec: FrontEndSpec, front_end: FrontEnd, settings: CompatFrontEnd, host: str) -> web.AppRunner:
    app = spec.application(front_end)
    # Just inside the front end's error middleware and its CORS preflights (0 and 1), which render refusals:
    # its own UI (public files, when no API route matches), then the token check for everything else.
    inner = 2
    if settings.static_dir:
        app.middlewares.insert(inner, static_files_middleware(StaticFiles(Path(settings.static_dir))))
        inner += 1
    if settings.require_token:
        app.middlewares.insert(inner, token_middleware(front_end.services))
    elif host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("compat %s listens on %s without a token: anyone who reaches it controls containers",
                    spec.name, host)
    return web.AppRunner(app, handle_signals=False, **server_log_options())


def listen_address(front_end: FrontEndSpec, settings: CompatFrontEnd) -> tuple[str, int]:
    """config.compat.<name>.{host,port}, overridden by the original project's environment variables."""
    host = os.environ.get(front_end.env_host or "", "") or settings.host
    port = os.environ.get(front_end.env_port or "", "")
    number = ascii_int(port)
    return host, number if number is not None else settings.port


def own_ports(config: Config) -> frozenset[int]:
    """Every port the daemon itself listens on: api.port, sftp.port (when enabled) and each enabled front end's
    own port."""
    ports = {config.api.port}
    if config.sftp.enabled:
        ports.add(config.sftp.port)
    for front_end in FRONT_ENDS:
        settings: CompatFrontEnd = getattr(config.compat, front_end.name)
        if settings.enabled:
            ports.add(listen_address(front_end, settings)[1])
    return frozenset(ports)


def token_middleware(services: CompatServices) -> Callable[..., Awaitable[web.StreamResponse]]:
    """For a separate port with `require_token`: the node token (Bearer, X-API-Key or ?token=) on every
    request; a refusal is answered by the front end's own error middleware, in its shape."""

    @web.middleware
    async def require_token(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        token = bearer_token(request) or request.headers.get("X-API-Key") or request.query.get("token")
        await services.tokens.authenticate(token, purpose="api", container=None)
        return await handler(request)

    return require_token
