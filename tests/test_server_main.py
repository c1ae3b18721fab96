"""The access log never shows a query-string value (tokens travel there on the WebSocket)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from lightd.server_main import MaskedAccessLogger


def test_access_log_masks_query_values(caplog):
    logger = logging.getLogger("test.access")
    access = MaskedAccessLogger(logger, "")
    request = make_mocked_request("GET", "/ws/srv?token=lightd_secret_value_123456&x=1")
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=101), 0.01)
    text = caplog.text
    assert "lightd_secret_value_123456" not in text
    assert "/ws/srv?token=***&x=***" in text
