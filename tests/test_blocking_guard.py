"""The no_blocking_calls guard itself must be able to fail."""

from __future__ import annotations

import asyncio
import logging
import time

from tests.conftest import _SlowCallbacks


async def test_guard_sees_a_blocking_callback():
    loop = asyncio.get_running_loop()
    handler = _SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    loop.set_debug(True)
    loop.slow_callback_duration = 0.2
    try:
        loop.call_soon(time.sleep, 0.3)
        await asyncio.sleep(0.5)
    finally:
        loop.set_debug(False)
        logging.getLogger("asyncio").removeHandler(handler)
    assert handler.messages and "took" in handler.messages[0]
