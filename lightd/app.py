"""create_app(config): builds the services, the routes and the compat sub-apps; every long-lived resource
is one cleanup_ctx generator, in dependency order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from lightd import cors, keys
from lightd.access_log import server_log_options
from lightd.api import console_ws, container_stats
from lightd.api import containers as containers_api
from lightd.api import install_log as install_log_api
from lightd.api import remote as remote_api
from lightd.api import middleware, openapi, ports as ports_api, public, tokens as tokens_api, volumes as volumes_api
from lightd.api import metrics as metrics_api
from lightd.api import system as system_api
from lightd.api import backups as backups_api
from lightd.api import signed_urls as signed_urls_api
from lightd.api import volume_files, volume_pulls
from lightd.api import templates as templates_api
from lightd.api import transfers as transfers_api
from lightd.auth import TokenService
from lightd.backups.service import BackupService
from lightd.compat.serving import build_front_ends, front_end_listeners_ctx, front_ends_ctx, own_ports
from lightd.config import Config, secure_data_dir
from lightd.console_sockets import ConsoleSockets
from lightd.docker.client import DockerClient
from lightd.docker.environment import DockerEnvironment
from lightd.events import EventBus
from lightd.http_cache import CachedAnswer
from lightd.log_context import request_context_middleware
from lightd.metrics import NodeMetrics, latency_middleware
from lightd.ports import PortPool
from lightd.servers.engine_watch import EngineWatch
from lightd.servers.environment import Environment
from lightd.servers.manager import ServerManager
from lightd.servers.mounts import MountPins
from lightd.servers.stats_sampler import StatsSampler
from lightd.signed_urls import SignedUrls
from lightd.store import Store
from lightd.sync import RemoteSync
from lightd.tasks import TaskOwner
from lightd.timers import TimerWheel
from lightd.templates.service import TemplateService
from lightd.transfers.service import TransferService
from lightd.volumes.pulls import PullService
from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    await asyncio.to_thread(secure_data_dir, config)
    store = Store(config.db_path)
    await store.open()
    app[keys.STORE] = store
    yield
    await store.close()


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    store = app[keys.STORE]
    tasks = TaskOwner("lightd")
    app[keys.TASKS] = tasks
    app[keys.TIMERS] = TimerWheel(tasks, config.servers.max_timers)
    app[keys.EVENTS] = EventBus(config.event_queue_size)
    app[keys.TOKENS] = TokenService(store, config.token, config.tokens.default_ttl_seconds, config.tokens.max_ttl_seconds)
    app[keys.SIGNED_URLS] = SignedUrls(lambda: store, config.token, config.tokens.signed_url_max_ttl_seconds)
    app[keys.PORTS] = PortPool(store, own_ports(config))
    volumes = VolumeService(config.volumes_dir, store, config.volumes, restores=config.volume_restores_dir)
    await volumes.open()
    app[keys.VOLUMES] = volumes
    # Temp files of writes and extractions a daemon stop interrupted (in the background: a walk of every volume).
    tasks.spawn(volumes.clean_temp_files(), name="clean-temp-files")
    yield
    await tasks.close()
    app[keys.EVENTS].close()


async def _pulls_ctx(app: web.Application) -> AsyncIterator[None]:
    # Pulls from URLs: their downloads are cancelled (temp files removed) before the volumes service goes.
    pulls = PullService(app[keys.VOLUMES], app[keys.CONFIG].volumes)
    app[keys.PULLS] = pulls
    yield
    await pulls.close()


async def _sync_ctx(app: web.Application) -> AsyncIterator[None]:
    # Before _servers_ctx: the subscription then sees the state changes servers announce at load
    # (reconcile, interrupted installs) and at shutdown (cancelled installs), and outlives them.
    sync = RemoteSync(app[keys.CONFIG].remote, app[keys.STORE], app[keys.EVENTS])
    app[keys.SYNC] = sync
    await sync.start()
    yield
    await sync.close()


async def _backups_ctx(app: web.Application) -> AsyncIterator[None]:
    # Before _servers_ctx: its recovery puts a server a dead daemon left `restoring` back offline before the
    # servers load; after _sync_ctx, so the panel hears of it. What it stops at close records its outcome.
    backups = BackupService(app[keys.CONFIG], app[keys.STORE], app[keys.EVENTS])
    app[keys.BACKUPS] = backups
    await backups.open()
    yield
    await backups.close()


async def _transfers_ctx(app: web.Application) -> AsyncIterator[None]:
    # Before _servers_ctx, as the backups': its recovery puts a server a dead daemon left `transferring` back
    # offline before the servers load, and removes half-received transfers. The servers it reaches later.
    transfers = TransferService(app[keys.CONFIG], app[keys.STORE], app[keys.EVENTS], lambda: app[keys.SERVERS],
                                lambda: app[keys.ENVIRONMENT])
    app[keys.TRANSFERS] = transfers
    await transfers.open()
    yield
    await transfers.close()


async def _templates_ctx(app: web.Application) -> AsyncIterator[None]:
    # Shipped, configured and stored templates, loaded before the servers: a create may name one at once.
    templates = TemplateService(app[keys.CONFIG], lambda: app[keys.STORE])
    await templates.open()
    app[keys.TEMPLATES] = templates
    yield


async def _servers_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    mounts = MountPins(config.mounts_dir, config.docker.allowed_mounts)
    client: DockerClient | None = None
    if keys.ENVIRONMENT not in app:  # else create_app was given one (the fast tests' in-memory environment)
        client = DockerClient(config.docker.socket)
        app[keys.ENVIRONMENT] = DockerEnvironment(client, config.docker, mounts, app[keys.VOLUMES].path_of)
    env = app[keys.ENVIRONMENT]
    manager = ServerManager(
        config=config, store=app[keys.STORE], env=env,
        events=app[keys.EVENTS], tasks=app[keys.TASKS], ports=app[keys.PORTS], volumes=app[keys.VOLUMES],
        mounts=mounts, timers=app[keys.TIMERS],
    )
    app[keys.SERVERS] = manager
    manager.on_delete.append(app[keys.BACKUPS].forget_server)
    manager.on_delete.append(app[keys.TRANSFERS].forget_server)
    # Servers from the store only: the API serves from here on. Comparing them with the engine (re-attaching
    # consoles, exits that went unseen) is the engine watch's first round, in the background.
    await manager.open()
    # Crash detection from the engine's event stream; the engine is polled only while that stream is down.
    watch = EngineWatch(manager, env, config.docker.engine_poll_seconds)
    monitor = app[keys.TASKS].spawn(watch.run(), name="engine-monitor")
    yield
    # Daemon shutdown never stops containers: only our tasks and connections end.
    monitor.cancel()
    await app[keys.TASKS].close()
    if client is not None:
        await client.close()


async def _sftp_ctx(app: web.Application) -> AsyncIterator[None]:
    # asyncssh (with cryptography's primitives) is imported only when SFTP is enabled: a fifth of the
    # imports, and the first answer after a restart comes that much sooner.
    if not app[keys.CONFIG].sftp.enabled:
        yield
        return
    from lightd.sftp.server import sftp_ctx

    steps = sftp_ctx(app)
    await anext(steps)
    yield
    await anext(steps, None)


async def _console_ctx(app: web.Application) -> AsyncIterator[None]:
    # After _servers_ctx: the sampler follows the servers' states; sockets close in on_shutdown, before this.
    config = app[keys.CONFIG]
    manager = app[keys.SERVERS]
    sampler = StatsSampler(
        servers=manager, env=app[keys.ENVIRONMENT], events=app[keys.EVENTS], tasks=app[keys.TASKS], volumes=app[keys.VOLUMES],
        interval=config.console.stats_interval_seconds, timers=app[keys.TIMERS],
    )
    app[keys.STATS] = sampler
    app[keys.CONSOLE_SOCKETS] = ConsoleSockets(config.console.max_sockets)
    sampler.start()
    yield
    await sampler.close()


def create_app(config: Config, *, config_path: Path | None = None,
               environment: Environment | None = None) -> web.Application:
    """The whole daemon as one aiohttp application (nothing global); `environment` replaces the Docker engine
    (tests/servers/fake_environment.py)."""
    app = web.Application(
        # cors before auth: a browser's preflight carries no token.
        # The request's id for its log lines first, then latency: it times every answer, errors included.
        middlewares=[request_context_middleware, latency_middleware, middleware.error_middleware, cors.middleware,
                     middleware.body_limit_middleware, middleware.auth_middleware, middleware.query_middleware],
        client_max_size=config.api.max_body_bytes,
        handler_args=server_log_options(),  # whichever runner serves the app logs requests safely
    )
    app[keys.CONFIG] = config
    app[keys.CONFIG_PATH] = config_path
    if environment is not None:
        app[keys.ENVIRONMENT] = environment
    app[keys.METRICS] = NodeMetrics(app)
    app[keys.CONTAINER_LISTING] = CachedAnswer()
    app[keys.OPENAPI] = openapi.OpenApiDocument()
    cors.install(app, config.api.cors_origins)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_core_ctx)
    app.cleanup_ctx.append(_pulls_ctx)
    app.cleanup_ctx.append(_sync_ctx)
    app.cleanup_ctx.append(_backups_ctx)
    app.cleanup_ctx.append(_transfers_ctx)
    app.cleanup_ctx.append(_templates_ctx)
    app.cleanup_ctx.append(_servers_ctx)
    app.cleanup_ctx.append(_console_ctx)
    app.cleanup_ctx.append(_sftp_ctx)  # after the servers load, closed (its sessions ended) before them
    # The compat front ends: started after the core services and stopped before them; their own-port
    # listeners serve only while the front ends run.
    app.cleanup_ctx.append(front_ends_ctx)
    app.cleanup_ctx.append(front_end_listeners_ctx)
    app.on_shutdown.append(console_ws.close_console_sockets)
    app.add_routes(public.routes)
    app.add_routes(openapi.routes)
    app.add_routes(tokens_api.routes)
    app.add_routes(signed_urls_api.routes)
    app.add_routes(ports_api.routes)
    app.add_routes(volumes_api.routes)
    app.add_routes(volume_files.routes)
    app.add_routes(volume_pulls.routes)
    app.add_routes(containers_api.routes)
    app.add_routes(templates_api.routes)
    app.add_routes(backups_api.routes)
    app.add_routes(transfers_api.routes)
    app.add_routes(install_log_api.routes)
    app.add_routes(container_stats.routes)
    app.add_routes(system_api.routes)
    app.add_routes(metrics_api.routes)
    app.add_routes(console_ws.routes)
    app.add_routes(remote_api.routes)
    build_front_ends(app, config)
    return app
