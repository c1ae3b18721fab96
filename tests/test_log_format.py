"""log_format "json": one JSON object per log line with the request id, the server id and the event — the
daemon's own lines and the access log alike, parsed back line by line."""

from __future__ import annotations

import io
import json
import logging

from aiohttp import web

from lightd.app import create_app
from lightd.log_context import JsonFormatter, configure_logging


def test_record_is_one_json_line_whatever_its_message():
    record = logging.LogRecord("lightd.x", logging.WARNING, __file__, 1, "%s: said %s", ("srv", "a\nb\x1b"), None)
    record.server = "srv"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "srv: said a\nb\x1b" and doc["event"] == "%s: said %s"
    assert doc["server"] == "srv" and doc["level"] == "WARNING" and doc["logger"] == "lightd.x"
    assert doc["time"].endswith("Z") and doc["request_id"] is None


async def test_daemon_logs_json_with_request_and_server(aiohttp_client, make_config, auth_headers):
    config = make_config(log_format="json")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    configure_logging("INFO", config.log_format)
    root.handlers[0].setStream(out)
    try:
        app = create_app(config)
        probe_log = logging.getLogger("lightd.probe")

        async def probe(request: web.Request) -> web.Response:
            probe_log.info("probe for %s", request.match_info["container_id"], extra={"event": "probe"})
            return web.json_response({})

        app.router.add_get("/containers/{container_id}/probe", probe)
        client = await aiohttp_client(app)
        async with client.get("/containers/srv1/probe", headers=auth_headers) as resp:
            assert resp.status == 200
        async with client.get("/containers/srv1/stats", headers=auth_headers) as resp:
            assert resp.status == 404
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # every line is one JSON object
    probe_line = next(d for d in lines if d["event"] == "probe")
    assert probe_line["server"] == "srv1" and probe_line["message"] == "probe for srv1" and probe_line["request_id"]
    access = [d for d in lines if d["event"] == "http_request"]
    first = next(d for d in access if d["path"] == "/containers/srv1/probe")
    assert first["request_id"] == probe_line["request_id"] and first["server"] == "srv1"
    assert first["status"] == 200 and first["method"] == "GET" and first["duration_ms"] >= 0
    second = next(d for d in access if d["path"] == "/containers/srv1/stats")
    assert second["status"] == 404 and second["request_id"] != first["request_id"]
