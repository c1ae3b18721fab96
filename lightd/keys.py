"""Every typed AppKey of lightd, in one place. Handlers read them from `request.config_dict` so
sub-applications see the parent's services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from lightd.auth import TokenService
    from lightd.config import Config
    from lightd.console_sockets import ConsoleSockets
    from lightd.events import EventBus
    from lightd.ports import PortPool
    from lightd.servers.environment import Environment
    from lightd.servers.manager import ServerManager
    from lightd.servers.stats_sampler import StatsSampler
    from lightd.store import Store
    from lightd.sync import RemoteSync
    from lightd.tasks import TaskOwner
    from lightd.volumes.service import VolumeService

CONFIG = web.AppKey("config", "Config")
CONFIG_PATH = web.AppKey("config_path", object)
STORE = web.AppKey("store", "Store")
TASKS = web.AppKey("tasks", "TaskOwner")
EVENTS = web.AppKey("events", "EventBus")
TOKENS = web.AppKey("tokens", "TokenService")
PORTS = web.AppKey("ports", "PortPool")
VOLUMES = web.AppKey("volumes", "VolumeService")
SERVERS = web.AppKey("servers", "ServerManager")
ENVIRONMENT = web.AppKey("environment", "Environment")
"""Where servers run (the Docker engine): for core services only; front ends use `ServerManager.engine`."""
SYNC = web.AppKey("sync", "RemoteSync")
STATS = web.AppKey("stats", "StatsSampler")
CONSOLE_SOCKETS = web.AppKey("console_sockets", "ConsoleSockets")

COMPAT = web.AppKey("compat", "CompatServices")
"""On a compat front end's application: the daemon's services (lightd.compat.base.CompatServices)."""
FRONT_END = web.AppKey("front_end", str)
"""On a compat front end's application: its name (e.g. "lxc_tools")."""
COMPAT_FRONT_ENDS = web.AppKey("compat_front_ends", "dict[str, FrontEnd]")
"""On the main application: each compat front end in use, built once, by name (lightd.compat.serving)."""

# Per-request values.
PRINCIPAL = web.RequestKey("principal", object)
"""The lightd.auth.Principal an authenticated request acts as."""
