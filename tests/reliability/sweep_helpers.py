"""Small helpers shared by the abuse, flood and bad-input reliability suites."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import stat
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import TEST_IMAGE, wait_for
from tests.reliability.daemon import Daemon

TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep {period}; done"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered))) - 1))
    return ordered[index]


def docker_names(prefix: str) -> list[str]:
    """Names of every Docker container carrying the test's prefix label."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=lightd.prefix={prefix}", "--format", "{{.Names}}"],
                         capture_output=True, text=True).stdout
    return sorted(out.split())


def docker_running(name: str) -> bool:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True).stdout
    return out.strip() == "true"


def tree(root: Path) -> dict[str, tuple[str, bytes | str | None, int]]:
    """Every entry under `root` without following links: kind, content (file bytes / link target), mode."""
    seen: dict[str, tuple[str, bytes | str | None, int]] = {}
    if not root.exists():
        return seen
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = full.lstat()
            rel = str(full.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", os.readlink(full), st.st_mode)
            elif stat.S_ISREG(st.st_mode):
                seen[rel] = ("file", hashlib.sha256(full.read_bytes()).digest(), st.st_mode)
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir", None, st.st_mode)
            else:
                seen[rel] = ("other", None, st.st_mode)
    return seen


# -- a real daemon subprocess ---------------------------------------------------------------------------
async def daemon_server(daemon: Daemon, internal_id: str, startup_command: str, *, start: bool = True,
                        start_pattern: str | None = None) -> None:
    """Create a server on a subprocess daemon, wait for its install, and start it (waiting for running)."""
    status, volume = await daemon.call("POST", "/volumes")
    assert status == 201, volume
    body: dict[str, Any] = {"internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
                            "startup_command": startup_command}
    if start_pattern:
        body["start_pattern"] = start_pattern
    status, answer = await daemon.call("POST", "/containers", json=body)
    assert status == 202, answer

    async def installed() -> bool:
        _, view = await daemon.call("GET", f"/containers/{internal_id}")
        assert view["install_state"] != "failed", view
        return view["install_state"] == "ready"

    await wait_for(installed, timeout=90, interval=0.2)
    if start:
        status, answer = await daemon.call("POST", f"/containers/{internal_id}/start")
        assert status == 202, answer

        async def running() -> bool:
            _, view = await daemon.call("GET", f"/containers/{internal_id}")
            return view["state"] == "running"

        await wait_for(running, timeout=60, interval=0.2)


class Watcher:
    """A console socket read in the background: every frame with its arrival time."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.close_code: int | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append((time.time(), json.loads(message.data)))
        self.close_code = self.ws.close_code

    def console(self, since: float = 0.0) -> list[tuple[float, str, int]]:
        """(arrival, line, ts ms) of every console frame that arrived after `since`."""
        return [(at, f["data"], f["ts"]) for at, f in self.frames if f["event"] == "console" and at >= since]

    def of(self, event: str) -> list[Any]:
        return [f["data"] for _, f in self.frames if f["event"] == event]

    def delays(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Seconds between publication (the frame's ts) and arrival, for console lines in a window."""
        return [at - ts / 1000 for at, _, ts in self.console(since) if at <= until]

    async def stop(self) -> None:
        await self.ws.close()
        try:
            await asyncio.wait_for(self.task, 10)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()


# -- raw WebSocket bytes (for frames aiohttp's client will not send) -----------------------------------
async def raw_ws_handshake(host: str, port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return reader, writer


def frame_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """A masked client frame header declaring `length` payload bytes (mask key of zeros)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + b"\0\0\0\0"


async def read_close_code(reader: asyncio.StreamReader, timeout: float) -> int | None:
    """Skip server data frames until a close frame; its code (None if the connection ended without one)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no close frame")
        try:
            head = await asyncio.wait_for(reader.readexactly(2), remaining)
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None  # the server dropped the connection (a reset can overtake its close frame)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


NO_SUCH_VOLUME = "00000000-0000-4000-8000-000000000000"


def route_params(volume_id: str = NO_SUCH_VOLUME, container_id: str = "nosuch", port: str = "40001") -> dict[str, str]:
    """A value for every path parameter of the native routes: the given volume and container, and ids of
    things that do not exist for the rest (a route added with a new parameter needs one here)."""
    return {"volume_id": volume_id, "container_id": container_id, "ip": "127.0.0.1", "port": port,
            "token_id": "nosuchtoken", "pull_id": "nosuch", "backup_id": "nosuch", "template_id": "nosuch",
            "transfer_id": "nosuch"}
