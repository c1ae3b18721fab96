"""Inbound frame parsing (documented and "Also accepted" shapes) and the inbound rate limit."""

from __future__ import annotations

import json

import pytest

from lightd.api.console_protocol import (
    Inbound, ProtocolError, TokenBucket, console_frames, frame_bytes, parse_inbound, text_frame,
)


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
    # upstream Lightd's docs (issue 11, item 12): the argument under its own name
    ({"event": "send_command", "command": "say hi\n"}, Inbound("send_command", "say hi")),
    ({"event": "power", "action": "kill"}, Inbound("power", "kill")),
    ({"event": "power", "data": "start", "action": "kill"}, Inbound("power", "start")),
])
def test_accepted_shapes(message, expected):
    assert parse_inbound(json.dumps(message)) == expected


@pytest.mark.parametrize("text", [
    "{nope", "[1]", '"power"', '{"event": "power", "data": "explode"}', '{"event": "nuke"}', '{"event": 3}',
    '{"send_command": ["a"], "power": ["start"]}', '{"event": "send_command", "data": ""}',
    '{"event": "send_command", "data": 5}', '{"event": "request_logs", "data": {"lines": 0}}',
    '{"event": "request_logs", "data": {"lines": true}}', "{}",
    '{"event": "request_logs", "data": {"lines": "\u00b2"}}', '{"logs": ["\u0663"]}',
    '{"event": "power", "action": "explode"}', '{"event": "send_command", "command": ""}',
    '{"event": "send_command", "action": "start"}', '{"event": "power", "command": "start"}',
])
def test_refused_shapes(text):
    with pytest.raises(ProtocolError):
        parse_inbound(text)


def test_frame_envelope():
    assert json.loads(frame_bytes("console", "x", ts=1.5)) == {"event": "console", "data": "x", "ts": 1500}


def test_token_bucket_one_notice_per_burst():
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.admit(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take_notice() and not bucket.take_notice()
    assert not bucket.admit(0.1)
    assert bucket.admit(0.6)  # refilled at 2/s
    assert not bucket.admit(0.6) and bucket.take_notice()


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Server-to-client frames, straight from RFC 6455 5.2: (opcode, payload) of each FIN frame."""
    frames, i = [], 0
    while i < len(data):
        first, second = data[i], data[i + 1]
        assert first & 0x80 and not first & 0x70, "FIN set, no RSV bits"
        assert not second & 0x80, "a server never masks"
        length, i = second & 0x7F, i + 2
        if length == 126:
            length, i = int.from_bytes(data[i:i + 2], "big"), i + 2
            assert length >= 126, "minimal length encoding"
        elif length == 127:
            length, i = int.from_bytes(data[i:i + 8], "big"), i + 8
            assert length >= 65536, "minimal length encoding"
        frames.append((first & 0x0F, data[i:i + length]))
        i += length
    assert i == len(data)
    return frames


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frame_length_encodings(size):
    payload = b"x" * size
    assert parse_frames(text_frame(payload)) == [(1, payload)]


def test_console_frames_are_one_documented_frame_per_line():
    lines = ["plain", "", 'quotes " and \\ backslash', "tab\tand\x00nul", "ünïcødé €", "\x1b[31mred\x1b[0m",
             "x" * 100, "y" * 70_000, "z" * 65_500]
    data = console_frames(lines, ts=1700000000.1234)
    frames = parse_frames(data)
    assert [op for op, _ in frames] == [1] * len(lines)
    assert [json.loads(payload) for _, payload in frames] == [
        {"event": "console", "data": line, "ts": 1700000000123} for line in lines]
    assert data == b"".join(text_frame(frame_bytes("console", line, 1700000000.1234)) for line in lines)
    assert console_frames([], ts=1.0) == b""
