"""The one time format of the REST API and remote sync: RFC 3339, UTC, milliseconds (`2026-11-30T04:20:00.123Z`).
The console WebSocket keeps its protocol's unix-millisecond `ts`."""

from __future__ import annotations

import time
from datetime import datetime


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC string with milliseconds; None stays None."""
    if ts is None:
        return None
    millis = int(round(ts * 1000))
    seconds, millis = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_rfc3339(value: str) -> float:
    """An RFC 3339 string back to unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
