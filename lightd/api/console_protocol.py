"""The console socket's wire format: inbound frames parsed into one `Inbound` (documented shapes and the
"Also accepted" upstream and Wings-style ones), outbound frames, and the per-socket inbound rate limit."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lightd.http import ascii_int
from lightd.servers.power import POWER_ACTIONS

DEFAULT_LOG_LINES = 150
MAX_LOG_LINES = 1000

# Every accepted event name -> the action it means.
_EVENT_NAMES = {
    "send_command": "send_command", "send command": "send_command",
    "power": "power", "set state": "power",
    "request_logs": "request_logs", "send logs": "request_logs", "logs": "request_logs",
    "request_stats": "request_stats", "send stats": "request_stats",
}
# Upstream Lightd's code sends the event name as the only key: {"send_command": ["line"]}.
_BARE_KEYS = ("send_command", "power", "logs")
# Upstream Lightd's docs name the argument: {"event": "send_command", "command": "…"}, {"event": "power", "action": "…"}.
_NAMED_ARGUMENTS = {"send_command": "command", "power": "action"}


class ProtocolError(Exception):
    """An inbound frame we cannot act on; the socket answers with an `error` frame and stays open."""


@dataclass(frozen=True, slots=True)
class Inbound:
    action: str  # send_command | power | request_logs | request_stats
    value: Any = None  # the command line, the power action or the number of log lines


def frame_bytes(event: str, data: Any, ts: float | None = None) -> bytes:
    """One outbound message, UTF-8 JSON: `{"event", "data", "ts"}` (unix ms)."""
    return orjson.dumps({"event": event, "data": data, "ts": int((time.time() if ts is None else ts) * 1000)})


# -- wire frames -------------------------------------------------------------------------------------
# The console socket writes text frames itself, many per transport write: one frame per console line is
# the documented shape, and a send per frame cost more than everything else the daemon does with a line.
# Server frames are never masked; the socket is opened without compression (as Wings does).
_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]
_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_CONSOLE_HEAD = b'{"event":"console","data":'


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked WebSocket text frame (RFC 6455 5.2) carrying `payload` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return _SHORT_HEADERS[size] + payload
    if size < 65536:
        return _PACK_16(0x81, 126, size) + payload
    return _PACK_64(0x81, 127, size) + payload


def console_frames(lines: Sequence[str], ts: float, event: str = "console") -> bytes:
    """One text frame per line, as one run of bytes: `{"event":"console","data":line,"ts":ms}` (or another
    line event: `install_output`)."""
    head = _CONSOLE_HEAD if event == "console" else b'{"event":%s,"data":' % orjson.dumps(event)
    tail = b',"ts":%d}' % int(ts * 1000)
    fixed = len(head) + len(tail)
    short = _SHORT_HEADERS
    frames = []
    for data in map(orjson.dumps, lines):
        size = fixed + len(data)
        header = short[size] if size < 126 else _PACK_16(0x81, 126, size) if size < 65536 else _PACK_64(0x81, 127, size)
        frames.append(header + head + data + tail)
    return b"".join(frames)


def parse_inbound(text: str) -> Inbound:
    """The action an inbound text frame asks for; ProtocolError for malformed JSON or unknown shapes."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("malformed JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must be a JSON object")
    if "event" in message:
        name = message["event"]
        payload = message["data"] if "data" in message else _first(message.get("args"))
    else:
        bare = [key for key in _BARE_KEYS if key in message]
        if len(bare) != 1:
            raise ProtocolError("unknown message: expected {\"event\": ..., \"data\": ...}")
        name, payload = bare[0], _first(message[bare[0]])
    if not isinstance(name, str) or name not in _EVENT_NAMES:
        raise ProtocolError(f"unknown event: {str(name)[:64]}")
    action = _EVENT_NAMES[name]
    if payload is None and "event" in message and _NAMED_ARGUMENTS.get(action) in message:
        payload = message[_NAMED_ARGUMENTS[action]]
    payload = _first(payload) if isinstance(payload, list) else payload
    if action == "send_command":
        return Inbound(action, _command(payload))
    if action == "power":
        if payload not in POWER_ACTIONS:
            raise ProtocolError(f"power: must be one of {', '.join(POWER_ACTIONS)}")
        return Inbound(action, payload)
    if action == "request_logs":
        return Inbound(action, _log_lines(payload))
    return Inbound(action)


def _first(value: Any) -> Any:
    """Upstream and Wings carry arguments in a list: take the first."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _command(payload: Any) -> str:
    if not isinstance(payload, str) or not payload.strip():
        raise ProtocolError("send_command: data must be a non-empty string")
    return payload.rstrip("\r\n")


def _log_lines(payload: Any) -> int:
    if isinstance(payload, dict):
        payload = payload.get("lines")
    if payload is None:
        return DEFAULT_LOG_LINES
    if isinstance(payload, str) and (number := ascii_int(payload.strip())) is not None:
        payload = number
    if isinstance(payload, bool) or not isinstance(payload, int) or payload < 1:
        raise ProtocolError("request_logs: lines must be a positive integer")
    return min(payload, MAX_LOG_LINES)


class TokenBucket:
    """Inbound rate limit: `rate` messages a second, bursts of `burst`. `notice` is True for the first
    refusal after an admitted message, so one `error` frame is sent per burst of excess."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._refusing = False

    def admit(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + max(now - self._updated, 0.0) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._refusing = False
            return True
        return False

    def take_notice(self) -> bool:
        if self._refusing:
            return False
        self._refusing = True
        return True
