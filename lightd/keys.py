"""Every typed AppKey of lightd, in one place. Handlers read them from `request.config_dict` so
sub-applications see the parent's services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from lightd.auth import TokenService
    from lightd.backups.service import BackupService
    from lightd.config import Config
    from lightd.console_sockets import ConsoleSockets
    from lightd.cors import CorsPolicy
    from lightd.events import EventBus
    from lightd.api.openapi import OpenApiDocument
    from lightd.http_cache import CachedAnswer
    from lightd.metrics import NodeMetrics
    from lightd.ports import PortPool
    from lightd.servers.environment import Environment
    from lightd.servers.manager import ServerManager
    from lightd.servers.stats_sampler import StatsSampler
    from lightd.sftp.server import SftpServer
    from lightd.signed_urls import SignedUrls
    from lightd.store import Store
    from lightd.sync import RemoteSync
    from lightd.tasks import TaskOwner
    from lightd.timers import TimerWheel
    from lightd.templates.service import TemplateService
    from lightd.transfers.service import TransferService
    from lightd.volumes.pulls import PullService
    from lightd.volumes.service import VolumeService

CONFIG = web.AppKey("config", "Config")
CONFIG_PATH = web.AppKey("config_path", object)
STORE = web.AppKey("store", "Store")
TASKS = web.AppKey("tasks", "TaskOwner")
TIMERS = web.AppKey("timers", "TimerWheel")
"""Every periodic or delayed per-server job (stats rounds, start timeouts) on one task (lightd/timers.py)."""
EVENTS = web.AppKey("events", "EventBus")
TOKENS = web.AppKey("tokens", "TokenService")
PORTS = web.AppKey("ports", "PortPool")
VOLUMES = web.AppKey("volumes", "VolumeService")
PULLS = web.AppKey("pulls", "PullService")
SIGNED_URLS = web.AppKey("signed_urls", "SignedUrls")
SERVERS = web.AppKey("servers", "ServerManager")
BACKUPS = web.AppKey("backups", "BackupService")
ENVIRONMENT = web.AppKey("environment", "Environment")
"""Where servers run (the Docker engine): for core services only; front ends use `ServerManager.engine`."""
SYNC = web.AppKey("sync", "RemoteSync")
METRICS = web.AppKey("metrics", "NodeMetrics")
"""The application's own Prometheus registry and HTTP histogram (lightd/metrics.py; GET /metrics)."""
CONTAINER_LISTING = web.AppKey("container_listing", "CachedAnswer")
"""The unpaged GET /containers answer: its ETag and gzip encoding, made once per listing."""
OPENAPI = web.AppKey("openapi", "OpenApiDocument")
"""GET /openapi.json's document, built once."""
STATS = web.AppKey("stats", "StatsSampler")
CONSOLE_SOCKETS = web.AppKey("console_sockets", "ConsoleSockets")
TEMPLATES = web.AppKey("templates", "TemplateService")
TRANSFERS = web.AppKey("transfers", "TransferService")
"""Server transfers between nodes (lightd.transfers): this node as source and as target."""
SFTP = web.AppKey("sftp", "SftpServer")
"""The built-in SFTP server (lightd.sftp), when `sftp.enabled`."""

COMPAT = web.AppKey("compat", "CompatServices")
"""On a compat front end's application: the daemon's services (lightd.compat.base.CompatServices)."""
FRONT_END = web.AppKey("front_end", str)
"""On a compat front end's application: its name (e.g. "lxc_tools")."""
COMPAT_FRONT_ENDS = web.AppKey("compat_front_ends", "dict[str, FrontEnd]")
"""On the main application: each compat front end in use, built once, by name (lightd.compat.serving)."""
CORS = web.AppKey("cors", "CorsPolicy")
"""On the main application and each front end's: the origins browsers may call it from (lightd.cors)."""

# Per-request values.
PRINCIPAL = web.RequestKey("principal", object)
REQUEST_ID = web.RequestKey("request_id", str)
"""The request's id (lightd.log_context): in its log lines and in the body of an unhandled error."""
"""The lightd.auth.Principal an authenticated request acts as."""
