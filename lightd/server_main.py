"""Run the daemon: uvloop when available and the main app, which runs everything else (the compat front
ends' own-port listeners are its cleanup_ctx). SIGTERM or SIGINT starts one ordered unwind: the listeners,
the front ends, the core services, the store."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path

from aiohttp import web

from lightd.access_log import server_log_options
from lightd.app import create_app
from lightd.config import Config

log = logging.getLogger("lightd")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def _serve(config: Config, config_path: Path) -> None:
    app = create_app(config, config_path=config_path)
    # Our own handlers, not AppRunner's: its GracefulExit escapes the event loop, which then cancels every
    # task at once; here the unwind runs with the loop intact.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, handle_signals=False, **server_log_options())
    # The modules and the app built so far live as long as the daemon: out of the collector's reach, so a
    # full collection scans only what came since and its pauses (which stall the event loop) stay short.
    # Frozen before the services start: servers, sockets and tasks made later are collected as usual. The
    # collector was off while they were made (lightd.cli) and is on again from here. No collection first: it
    # would free under 1 MB (the classes slots dataclasses replace) for 30 ms of start-up (more on a busy host).
    gc.freeze()
    gc.enable()
    try:
        await runner.setup()
        await web.TCPSite(runner, config.api.host, config.api.port).start()
        log.info("lightd listening on http://%s:%d", config.api.host, config.api.port)
        await stop.wait()
        log.info("lightd stopping")
    finally:
        # After a failed start too: the cleanup contexts that started are closed, the store among them (an
        # open aiosqlite connection's thread would keep the process from exiting).
        try:
            await runner.cleanup()
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)


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
    except KeyboardInterrupt:
        pass  # SIGINT before the handlers are in place: a requested stop, exit 0
    return 0
