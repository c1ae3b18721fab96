"""Inbound frame parsing (documented and "Also accepted" shapes) and the inbound rate limit."""

from __future__ import annotations

import json

import pytest

from lightd.api.console_protocol import Inbound, ProtocolError, TokenBucket, frame, parse_inbound


@pytest.mark.parametrize("message, expected", [
    ({"event": "send_command", "data": "say hi"}, Inbound("send_command", "say hi")),
    ({"event": "power", "data": "restart"}, Inbound("power", "restart")),
    ({"event": "request_logs", "data": {"lines": 20}}, Inbound("request_logs", 20)),
    ({"event": "request_logs"}, Inbound("request_logs", 150)),
    ({"event": "request_logs", "data": {"lines": 5000}}, Inbound("request_logs", 1000)),
    ({"send_command": ["list"]}, Inbound("send_command", "list")),
    ({"power": ["kill"]}, Inbound("power", "kill")),
    ({"logs": ["50"]}, Inbound("request_logs", 50)),
    ({"event": "send command", "args": ["stop"]}, Inbound("send_command", "stop")),
    ({"event": "set state", "args": ["start"]}, Inbound("power", "start")),
    ({"event": "send logs"}, Inbound("request_logs", 150)),
    ({"event": "send stats"}, Inbound("request_stats")),
])
def test_accepted_shapes(message, expected):
    assert parse_inbound(json.dumps(message)) == expected


@pytest.mark.parametrize("text", [
    "{nope", "[1]", '"power"', '{"event": "power", "data": "explode"}', '{"event": "nuke"}', '{"event": 3}',
    '{"send_command": ["a"], "power": ["start"]}', '{"event": "send_command", "data": ""}',
    '{"event": "send_command", "data": 5}', '{"event": "request_logs", "data": {"lines": 0}}',
    '{"event": "request_logs", "data": {"lines": true}}', "{}",
])
def test_refused_shapes(text):
    with pytest.raises(ProtocolError):
        parse_inbound(text)


def test_frame_envelope():
    assert json.loads(frame("console", "x", ts=1.5)) == {"event": "console", "data": "x", "ts": 1500}


def test_token_bucket_one_notice_per_burst():
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.admit(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take_notice() and not bucket.take_notice()
    assert not bucket.admit(0.1)
    assert bucket.admit(0.6)  # refilled at 2/s
    assert not bucket.admit(0.6) and bucket.take_notice()
