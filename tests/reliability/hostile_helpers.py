"""Helpers of the hostile-tenant suite: an API client whose every call is bounded in time, a tenant's shell
driven through its server's console, a monitor of the daemon's responsiveness (ping latency and RSS), tar
header bombs, the depth of a tree, the checks made as an unprivileged host user, and the clean-up of what
a test leaves on the host (pinned mounts, trees too deep for shutil)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import subprocess
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.conftest import TEST_IMAGE
from tests.reliability.daemon import Daemon

API_TIMEOUT = 60.0
MAX_BODY = 16 * 1024 * 1024
NOBODY = 65534  # the host's unprivileged account (Debian's `nobody`), used by number: no account is created
SHELL = 'echo "{tag} uid=$(id -u) gid=$(id -g)"; while read -r line; do eval "$line"; done; sleep 600'
"""A tenant's shell: announce itself, then run every console line (what a plugin with a shell can do)."""


class TimedApi:
    """Authenticated calls to a daemon subprocess over one session; each call is bounded in time, so a
    stalled daemon fails the test instead of hanging it. Returns (status, body)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TimedApi:
        self.session = aiohttp.ClientSession(headers=self.daemon.headers)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, *, timeout: float = API_TIMEOUT, **kwargs: Any) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.request(method, self.daemon.url + path, timeout=aiohttp.ClientTimeout(total=timeout),
                                        **kwargs) as resp:
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:  # a broken daemon can echo a 1 GiB file name back
                    return resp.status, f"<a body of more than {MAX_BODY} bytes: {chunks[0][:200]!r}…>"
            raw = b"".join(chunks)
            return resp.status, json.loads(raw) if resp.content_type == "application/json" else raw

    async def view(self, internal_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/containers/{internal_id}")
        assert status == 200, (internal_id, status, body)
        return body

    async def logs(self, internal_id: str, lines: int = 1000) -> list[str]:
        status, body = await self.call("GET", f"/containers/{internal_id}/logs", params={"lines": str(lines)})
        assert status == 200, (internal_id, status, body)
        return body["lines"]

    async def new_volume(self) -> tuple[str, Path]:
        status, body = await self.call("POST", "/volumes")
        assert status == 201, body
        return body["volume_id"], Path(body["path"])


async def poll(predicate: Any, *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Await `predicate()` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        await asyncio.sleep(interval)


# -- servers -------------------------------------------------------------------------------------------
async def create_server(api: TimedApi, internal_id: str, startup_command: str, *, volume_id: str | None = None,
                        **spec: Any) -> tuple[int, Any, str]:
    """POST /containers on a new volume (or the one given); (status, body, volume_id)."""
    if volume_id is None:
        volume_id, _ = await api.new_volume()
    body = {"internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume_id,
            "startup_command": startup_command, **spec}
    status, answer = await api.call("POST", "/containers", json=body)
    return status, answer, volume_id


async def wait_installed(api: TimedApi, internal_id: str, timeout: float = 90) -> None:
    async def ready() -> bool:
        view = await api.view(internal_id)
        assert view["install_state"] != "failed", view
        return view["install_state"] == "ready"

    await poll(ready, timeout=timeout, what=f"{internal_id} installed")


async def wait_state(api: TimedApi, internal_id: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        view = await api.view(internal_id)
        return view if view["state"] in states else None

    return await poll(reached, timeout=timeout, what=f"{internal_id} {'/'.join(states)}")


async def start_and_wait(api: TimedApi, internal_id: str, timeout: float = 60) -> float:
    """Start a server and wait for `running`; the seconds it took."""
    began = time.monotonic()
    status, body = await api.call("POST", f"/containers/{internal_id}/start")
    assert status == 202, (internal_id, status, body)
    await wait_state(api, internal_id, ("running",), timeout)
    return time.monotonic() - began


class TenantShell:
    """A hostile server: its startup command is a shell that runs whatever its console is sent."""

    def __init__(self, api: TimedApi, internal_id: str, volume_id: str, volume_path: Path) -> None:
        self.api = api
        self.id = internal_id
        self.volume_id = volume_id
        self.volume_path = volume_path
        self.uid: int | None = None
        self.gid: int | None = None

    @property
    def tag(self) -> str:
        return f"{self.id.upper()}-READY"

    @classmethod
    async def launch(cls, api: TimedApi, internal_id: str, **spec: Any) -> TenantShell:
        """Create (on a new volume), install and start the server; running once its shell announced itself."""
        volume_id, volume_path = await api.new_volume()
        shell = cls(api, internal_id, volume_id, volume_path)
        status, body, _ = await create_server(api, internal_id, SHELL.format(tag=shell.tag), volume_id=volume_id,
                                              start_pattern=f"^{shell.tag} uid=", **spec)
        assert status == 202, (internal_id, status, body)
        await wait_installed(api, internal_id)
        await start_and_wait(api, internal_id)

        async def hello() -> str | None:
            # The matching line reaches the history just after `running` is announced.
            lines = [line for line in await api.logs(internal_id) if line.startswith(shell.tag + " uid=")]
            return lines[-1] if lines else None

        line = await poll(hello, timeout=10, what=f"{internal_id}: its shell announcing itself")
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        shell.uid, shell.gid = int(fields["uid"]), int(fields["gid"])
        return shell

    async def run(self, command: str, timeout: float = 60) -> tuple[int, list[str]]:
        """Run one shell command line in the server (through its console); its exit code and output."""
        mark = secrets.token_hex(4)
        line = f'echo "<<{mark}"; {{ {command} ; }} 2>&1; echo ">>{mark} rc=$?"'
        status, body = await self.api.call("POST", f"/containers/{self.id}/commands", json={"command": line})
        assert status == 202, (self.id, status, body)

        async def finished() -> tuple[int, list[str]] | None:
            lines = await self.api.logs(self.id)
            ends = [i for i, text in enumerate(lines) if text.startswith(f">>{mark} rc=")]
            if not ends:
                return None
            begins = [i for i, text in enumerate(lines[: ends[-1]]) if text == f"<<{mark}"]
            output = lines[begins[-1] + 1: ends[-1]] if begins else lines[: ends[-1]]
            return int(lines[ends[-1]].split("rc=", 1)[1]), output

        return await poll(finished, timeout=timeout, interval=0.25, what=f"{self.id}: {command[:60]!r}")


# -- responsiveness ------------------------------------------------------------------------------------
class DaemonMonitor:
    """While entered: `GET /api/v1/public/ping` every 100 ms (a failed or timed-out ping counts with the
    time it took) and the daemon's RSS every 250 ms; both stop by themselves after `max_seconds`."""

    def __init__(self, daemon: Daemon, *, max_seconds: float = 600.0, ping_timeout: float = 10.0) -> None:
        assert daemon.process is not None
        self.daemon = daemon
        self.process = psutil.Process(daemon.process.pid)
        self.max_seconds = max_seconds
        self.ping_timeout = ping_timeout
        self.latencies: list[float] = []
        self.ping_failures: list[str] = []
        self.rss: list[int] = []
        self.started = self.ended = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> DaemonMonitor:
        self.started = time.time()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ping()), loop.create_task(self._sample_rss())]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._stop.set()
        self.ended = time.time()
        await asyncio.wait(self._tasks, timeout=self.ping_timeout + 5)
        for task in self._tasks:
            task.cancel()

    def _running(self, deadline: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline

    async def _ping(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        timeout = aiohttp.ClientTimeout(total=self.ping_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self._running(deadline):
                began = time.monotonic()
                try:
                    async with session.get(self.daemon.url + "/api/v1/public/ping") as resp:
                        await resp.read()
                        if resp.status != 200:
                            self.ping_failures.append(f"status {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.ping_failures.append(f"{type(exc).__name__}: {exc}")
                self.latencies.append(time.monotonic() - began)
                await asyncio.sleep(0.1)

    async def _sample_rss(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while self._running(deadline):
            try:
                self.rss.append(self.process.memory_info().rss)
            except psutil.Error:
                return  # the daemon is gone: the test says so
            await asyncio.sleep(0.25)


def max_gap(arrivals: list[float], start: float, end: float) -> float:
    """The longest time without an arrival in [start, end], the edges included."""
    points = [start, *sorted(a for a in arrivals if start <= a <= end), end]
    return max(b - a for a, b in zip(points, points[1:]))


# -- hostile inputs --------------------------------------------------------------------------------------
def header_bomb(kind: str, declared: int = 1 << 30) -> bytes:
    """A .tar.gz of about 1 MB whose first member is a pax extended header (`kind="pax"`) or a GNU long
    name (`kind="gnu"`) declaring `declared` bytes of header data (really there, as one pax record or one
    name), then a small regular file. `tarfile` reads such a header whole into memory."""
    assert declared % tarfile.BLOCKSIZE == 0
    if kind == "pax":
        info = tarfile.TarInfo("././@PaxHeader")
        info.type = tarfile.XHDTYPE
        lead = f"{declared} comment=".encode()  # a record's length counts the whole record
        head, fill, tail = lead, declared - len(lead) - 1, b"\n"
        fmt = tarfile.USTAR_FORMAT
    elif kind == "gnu":
        info = tarfile.TarInfo("././@LongLink")
        info.type = tarfile.GNUTYPE_LONGNAME
        head, fill, tail = b"", declared - 1, b"\0"
        fmt = tarfile.GNU_FORMAT
    else:
        raise ValueError(kind)
    info.size = declared
    payload = tarfile.TarInfo("hello.txt")
    payload.size = 6
    # Z_RLE: a run of one byte compresses ~1000:1 in about a second per GiB.
    gz = zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    out = [gz.compress(info.tobuf(format=fmt) + head)]
    chunk = b"x" * (1 << 20)
    while fill > 0:
        piece = chunk if fill >= len(chunk) else chunk[:fill]
        out.append(gz.compress(piece))
        fill -= len(piece)
    out.append(gz.compress(tail + payload.tobuf(format=tarfile.USTAR_FORMAT) + b"hello\n".ljust(512, b"\0")
                           + b"\0" * 1024))
    out.append(gz.flush())
    return b"".join(out)


def chain_depth(top: Path, limit: int = 100_000) -> int:
    """Levels of a chain of single sub-directories starting at `top` (top counted), links not followed."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    depth = 1
    try:
        while depth < limit:
            subdirs = [e.name for e in os.scandir(fd) if e.is_dir(follow_symlinks=False)]
            if len(subdirs) != 1:
                return depth
            child = os.open(subdirs[0], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            depth += 1
        return depth
    finally:
        os.close(fd)


# -- rights, as the host sees them ---------------------------------------------------------------------
def elevated_files(root: Path, max_depth: int = 64, max_entries: int = 100_000) -> list[str]:
    """Regular files below `root` that would run with root's rights for whoever executes them: setuid
    and owned by uid 0, or setgid and of gid 0. Walked iteratively with lstat, links never followed."""
    found: list[str] = []
    pending = [(root, 0)]
    seen = 0
    while pending and seen < max_entries:
        directory, depth = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            st = os.lstat(entry.path)
            if stat.S_ISDIR(st.st_mode) and depth < max_depth:
                pending.append((Path(entry.path), depth + 1))
            elif stat.S_ISREG(st.st_mode) and ((st.st_mode & stat.S_ISUID and st.st_uid == 0)
                                               or (st.st_mode & stat.S_ISGID and st.st_gid == 0)):
                found.append(f"{entry.path} ({stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid})")
    return found


# Run by a copied bash with -p (keep the effective ids a setuid bit gave): the effective uid and gid.
IDS_SCRIPT = 'while read -r key real eff rest; do case $key in Uid:|Gid:) echo "$key $real $eff";; esac; done < /proc/self/status'


def run_as_nobody(program: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Execute `program` as the host's unprivileged `nobody`: its uid and gid, no other groups, and so no
    capabilities. (Not `setpriv`: on this host it ran a program in a directory nobody may not enter.)"""
    command = [str(program), *args]
    try:
        return subprocess.run(command, user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
                              capture_output=True, text=True, timeout=20)
    except OSError as exc:  # the exec itself was refused (reported by the child before it could run)
        return subprocess.CompletedProcess(command, 126, "", f"{type(exc).__name__}: {exc}")


def effective_ids(output: str) -> dict[str, int]:
    """{"Uid": effective uid, "Gid": effective gid} from IDS_SCRIPT's output."""
    ids = {}
    for line in output.splitlines():
        key, _, eff = (line.split() + ["", "", ""])[:3]
        if key in ("Uid:", "Gid:") and eff.isdigit():
            ids[key.rstrip(":")] = int(eff)
    return ids


# -- clean-up ------------------------------------------------------------------------------------------
def unmount_below(root: Path) -> None:
    """Detach every mount at or below `root` (pin points a stopped daemon left), deepest first."""
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4].replace("\\040", " ") for line in mountinfo]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=20)


def remove_tree(root: Path) -> None:
    """Remove a test's host directory: mounts detached first, never crossing into another file system,
    at any depth (rm's fts walk; shutil.rmtree recurses and stops at Python's recursion limit)."""
    if not root.exists():
        return
    unmount_below(root)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(root)], capture_output=True, timeout=120)
