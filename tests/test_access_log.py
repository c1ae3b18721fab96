"""The access log never shows a query-string value (tokens travel there on the WebSocket): the main API and
the compat front ends on their own ports."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from lightd.access_log import MaskedAccessLogger


def test_access_log_masks_query_values(caplog):
    logger = logging.getLogger("test.access")
    access = MaskedAccessLogger(logger, "")
    request = make_mocked_request("GET", "/ws/srv?token=lightd_secret_value_123456&x=1")
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=101), 0.01)
    text = caplog.text
    assert "lightd_secret_value_123456" not in text
    assert "/ws/srv?token=***&x=***" in text


async def test_front_ends_on_their_own_port_mask_query_values_too(aiohttp_client, make_config, caplog):
    """A front end served on its own port logs through the same masked access logger as the main API."""
    import socket

    from lightd.app import create_app
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(compat={"lxd_panel": {"enabled": True, "port": port}})
    await aiohttp_client(create_app(config))
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/health?token=lightd_secret_value_123456") as resp:
                await resp.read()
    assert "/api/health?token=***" in caplog.text
    assert "lightd_secret_value_123456" not in caplog.text
