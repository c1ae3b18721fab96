"""What a client sends never shapes the log: no forged lines, no control characters, and a request aiohttp
cannot parse is one line, not a traceback (issue 10, item 9). Raw bytes go to the real app over a socket."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from aiohttp import web

from lightd import keys
from lightd.access_log import escape
from lightd.api import middleware
from tests.conftest import wait_for

FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
FORGED = "2030-01-01 00:00:00,000 INFO lightd: node token rotated"


async def send_raw(client: Any, *requests: bytes) -> bytes:
    """Write each request on one connection, reading the answer to each but the last, then read until the
    server closes the connection (bounded in time); the last answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        for index, data in enumerate(requests):
            writer.write(data)
            await writer.drain()
            if index < len(requests) - 1:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await asyncio.wait_for(reader.readexactly(int(length.group(1)) if length else 0), timeout=10)
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def assert_one_clean_line(record: logging.LogRecord) -> str:
    """The record as a handler writes it is one line of printable characters."""
    text = FORMAT.format(record)
    assert "\n" not in text and "\r" not in text, text
    assert text.isprintable(), repr(text)
    return text


def http_records(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("aiohttp", "lightd"))]


async def test_percent_encoded_newline_in_path_and_query_cannot_forge_a_line(client, caplog):
    caplog.set_level(logging.DEBUG)
    forged_path = "/x%0a" + FORGED.replace(" ", "%20") + "%0d%1b[2J%e2%80%a8"
    request = f"GET {forged_path}?a%0Ab=1&tok%1ben=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await send_raw(client, request.encode())
    assert answer.startswith(b"HTTP/1.1 404")

    def logged() -> list[logging.LogRecord]:
        return [r for r in http_records(caplog) if "node token rotated" in r.getMessage()]

    records = await wait_for(logged, timeout=5, interval=0.05)
    for record in http_records(caplog):
        assert_one_clean_line(record)
    line = records[0].getMessage()
    assert "/x\\n2030-01-01" in line and "\\r\\x1b[2J\\u2028" in line
    assert "?a\\nb=***&tok\\x1ben=***" in line


GOOD = b"GET /api/v1/public/ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("raw", [
    # a garbage method after a good request on the same connection (aiohttp logs a bad first one at DEBUG)
    (GOOD, b"G\x1bT\n" + FORGED.encode() + b" / HTTP/1.1\r\n\r\n"),
    (GOOD, b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",),
    (b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x00\x1b\n" + FORGED.encode() + b"\r\n\r\n",),
    (b"GET /\x1b[2J\x00 HTTP/1.1\r\nHost: x\r\n\r\n",),
    (b"GET / HTTP/7.3\r\nHost: x\r\n\r\n",),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",),
], ids=["pipelined-forging-method", "pipelined-nul-method", "first-nul-method", "header-without-colon",
        "control-in-header", "control-in-target", "bad-version", "line-too-long"])
async def test_a_bad_request_logs_one_escaped_line(client, caplog, raw):
    caplog.set_level(logging.DEBUG)
    answer = await send_raw(client, *raw)
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiohttp.server" and "Error handling request" in r.getMessage()]

    records = await wait_for(logged, timeout=5, interval=0.05)
    assert len(records) == 1
    assert records[0].exc_info is None and records[0].levelno <= logging.INFO  # the client's error, not ours
    for record in http_records(caplog):
        assert_one_clean_line(record)


async def test_unhandled_error_log_escapes_the_path(aiohttp_client, config, caplog):
    """The 500 path of the error middleware logs the method and path of the failed request."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[middleware.error_middleware])
    app[keys.CONFIG] = config
    app.router.add_get(r"/{tail:[\s\S]*}", broken)  # `.` would not match the newline
    test_client = await aiohttp_client(app)
    caplog.set_level(logging.DEBUG)
    target = "/a%0a" + FORGED.replace(" ", "%20")
    await send_raw(test_client, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    records = await wait_for(lambda: [r for r in caplog.records if "unhandled error" in r.getMessage()], timeout=5)
    message = records[0].getMessage()
    assert "\n" not in message and message.isprintable()
    assert "GET /a\\n2030-01-01" in message


def test_escape():
    assert escape("/plain/path é ü") == "/plain/path é ü"
    assert escape("a\nb\rc\x00d\x1b\x7f\x85\u2028\u202e") == "a\\nb\\rc\\x00d\\x1b\\x7f\\x85\\u2028\\u202e"
    assert escape(None) == "None"
