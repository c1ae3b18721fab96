"""Run the daemon: uvloop when available, the main app, and each compat front end on its own port."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from lightd.access_log import server_log_options
from lightd.app import create_app
from lightd.compat.serving import start_front_ends
from lightd.config import Config

log = logging.getLogger("lightd")


async def _serve(config: Config, config_path: Path) -> None:
    app = create_app(config, config_path=config_path)
    runner = web.AppRunner(app, handle_signals=True, **server_log_options())
    await runner.setup()
    site = web.TCPSite(runner, config.api.host, config.api.port)
    await site.start()
    log.info("lightd listening on http://%s:%d", config.api.host, config.api.port)
    front_ends = await start_front_ends(app, config)
    try:
        await asyncio.Event().wait()
    finally:
        for front_end in front_ends:
            await front_end.cleanup()
        await runner.cleanup()


def run(config: Config, config_path: Path) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(_serve(config, config_path))
        else:  # pragma: no cover
            asyncio.run(_serve(config, config_path))
    except (KeyboardInterrupt, GracefulExit):
        pass  # SIGINT/SIGTERM: a requested stop, exit 0 (systemd must not record it as a failure)
    return 0
