"""Serving the compat front ends: each is one aiohttp application built by its `create_app(services)`,
mounted on the main port under /compat/<name> (node token required there), and optionally served on its
own port so an unmodified client of that API works with its default base URL."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from lightd import keys
from lightd.access_log import server_log_options
from lightd.api.middleware import bearer_token
from lightd.api.responses import ascii_int
from lightd.compat.base import CompatServices
from lightd.config import CompatFrontEnd, Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontEnd:
    name: str  # the key under config.compat
    prefix: str  # where it is mounted on the main port
    factory: str  # "module:function" taking CompatServices, returning a web.Application
    env_host: str | None = None  # environment variables the original project honours
    env_port: str | None = None

    def build(self, services: CompatServices) -> web.Application:
        module, _, function = self.factory.partition(":")
        app: web.Application = getattr(importlib.import_module(module), function)(services)
        app[keys.FRONT_END] = self.name
        app[keys.COMPAT] = services
        return app


FRONT_ENDS: tuple[FrontEnd, ...] = (
    FrontEnd("lxc_tools", "/compat/lxc-tools", "lightd.compat.lxc_tools.app:create_app", "LXC_API_HOST", "LXC_API_PORT"),
    FrontEnd("lxd_panel", "/compat/lxd-panel", "lightd.compat.lxd_panel.app:create_app", "API_HOST", "API_PORT"),
    FrontEnd("proxicloud", "/compat/proxicloud", "lightd.compat.proxicloud.app:create_app", "HOST", "PORT"),
    FrontEnd("container_codes", "/compat/container-codes", "lightd.compat.container_codes.app:create_app"),
)


def mount_front_ends(main_app: web.Application, config: Config) -> None:
    """Mount every front end under its prefix on the main app."""
    if not config.compat.mount_on_main:
        return
    services = CompatServices(main_app)
    for front_end in FRONT_ENDS:
        main_app.add_subapp(front_end.prefix, front_end.build(services))


def listen_address(front_end: FrontEnd, settings: CompatFrontEnd) -> tuple[str, int]:
    """config.compat.<name>.{host,port}, overridden by the original project's environment variables."""
    host = os.environ.get(front_end.env_host or "", "") or settings.host
    port = os.environ.get(front_end.env_port or "", "")
    number = ascii_int(port)
    return host, number if number is not None else settings.port


def own_ports(config: Config) -> frozenset[int]:
    """Every port the daemon itself listens on: api.port and each enabled front end's own port."""
    ports = {config.api.port}
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


async def start_front_ends(main_app: web.Application, config: Config) -> list[web.AppRunner]:
    """Start the front ends enabled in config on their own ports; the runners, for cleanup."""
    runners: list[web.AppRunner] = []
    services = CompatServices(main_app)
    for front_end in FRONT_ENDS:
        settings: CompatFrontEnd = getattr(config.compat, front_end.name)
        if not settings.enabled:
            continue
        app = front_end.build(services)
        if settings.require_token:
            # Just inside the front end's error middleware (first in every front end), which renders the 401.
            app.middlewares.insert(1, token_middleware(services))
        elif settings.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("compat %s listens on %s without a token: anyone who reaches it controls containers",
                        front_end.name, settings.host)
        runner = web.AppRunner(app, handle_signals=False, **server_log_options())
        await runner.setup()
        host, port = listen_address(front_end, settings)
        await web.TCPSite(runner, host, port).start()
        log.info("compat front end %s listening on http://%s:%d", front_end.name, host, port)
        runners.append(runner)
    return runners
