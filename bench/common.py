"""Shared helpers for the lightd benchmarks (not a benchmark itself).

Every benchmark starts the REAL daemon as a subprocess (`python -m lightd --config <tmp>/config.json serve`)
with a temporary config (fresh token, data_dir in a temp dir, a free `api.port`, a unique
`docker.container_prefix` `lightdbench-<hex>-`), waits for `GET /api/v1/public/ping`, and drives it over
127.0.0.1 only. `Bench` owns everything a run makes: on exit (also on an exception, Ctrl-C or SIGTERM) it
stops the daemon(s) and helper processes it started and removes every Docker container carrying its prefix
(by the `lightd.prefix` label and by name).

Figures are printed as one line each by `report()`; every figure carries a baseline measured in the same
run and a ratio, never an absolute-time assertion (the machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

TEST_IMAGE = "lightd-test/busybox:latest"
VENDOR = "Application/vnd.pkglatv1+json"
PING = "/api/v1/public/ping"


# -- small utilities -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(data)))
    return data[min(rank, len(data)) - 1]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.inf


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(name: str, text: str) -> None:
    """One summary line per figure."""
    print(f"{name}: {text}", flush=True)


def note(text: str) -> None:
    """Progress, on stderr so stdout holds only the summary lines."""
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter durations")
    if extra:
        extra(parser)
    return parser.parse_args()


def docker(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def ensure_engine() -> None:
    """The engine and the test image (scripts/setup-docker.sh makes sure of both)."""
    if docker("image", "inspect", TEST_IMAGE).returncode == 0:
        return
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup-docker.sh")], capture_output=True, text=True)
    if result.returncode != 0 or docker("image", "inspect", TEST_IMAGE).returncode != 0:
        raise SystemExit(f"Docker engine or {TEST_IMAGE} not available: {result.stderr[-2000:]}")


def dockerd_pid() -> int | None:
    """The engine's pid, to notice another process restarting dockerd during a run (figures then invalid)."""
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def remove_prefixed_containers(prefix: str) -> int:
    """Remove every container with our label or our name prefix; returns how many."""
    ids: set[str] = set()
    for flt in (f"label=lightd.prefix={prefix}", f"name=^/?{prefix}"):
        out = docker("ps", "-aq", "--filter", flt, timeout=60).stdout.split()
        ids.update(out)
    # Bounded batches: `docker rm -f` with hundreds of ids on one line is fine, but keep each call short.
    ids_list = sorted(ids)
    for i in range(0, len(ids_list), 50):
        docker("rm", "-f", *ids_list[i:i + 50], timeout=300)
    return len(ids_list)


def minimal_spec(internal_id: str, volume_id: str, startup_command: str, **extra: Any) -> dict[str, Any]:
    """A valid ContainerSpec dict (lightd/servers/models.py) on the test image."""
    from lightd.servers.models import ContainerSpec

    spec = ContainerSpec.model_validate({
        "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume_id,
        "startup_command": startup_command, **extra,
    })
    return spec.model_dump(mode="json")


# -- the daemon --------------------------------------------------------------------------------------------
class Daemon:
    """One `python -m lightd serve` subprocess with its own config and data dir."""

    def __init__(self, workdir: Path, prefix: str, overrides: dict[str, Any] | None = None, name: str = "lightd") -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.name = name
        self.token = "lightd_" + secrets.token_urlsafe(32)
        self.port = free_port()
        self.data_dir = workdir / "data"
        self.config_path = workdir / "config.json"
        self.log_path = workdir / f"{name}.log"
        self.raw: dict[str, Any] = {
            "token": self.token,
            "data_dir": str(self.data_dir),
            "api": {"host": "127.0.0.1", "port": self.port},
            "docker": {"container_prefix": prefix},
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(self.raw.get(key), dict):
                self.raw[key] = {**self.raw[key], **value}
            else:
                self.raw[key] = value
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": VENDOR}

    @property
    def db_path(self) -> Path:
        return self.data_dir / "lightd.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.raw, indent=2))
        os.chmod(self.config_path, 0o600)

    async def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lightd", "--config", str(self.config_path), "serve"],
            cwd=str(ROOT), stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        await wait_http(self.url + PING, timeout, self)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` (containers keep running by design; Bench removes them)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


async def wait_http(url: str, timeout: float, daemon: Daemon | None = None, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    proc = proc or (daemon.proc if daemon else None)
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                tail = daemon.log_tail() if daemon else ""
                raise RuntimeError(f"{url}: process exited with {proc.returncode}\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout}s" + (f"\n{daemon.log_tail()}" if daemon else ""))


class Bench:
    """Owns a run: temp dir, prefix, daemons, helper processes; cleans everything up on exit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"lightdbench-{secrets.token_hex(3)}-"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"lightd-{name}-"))
        self.daemons: list[Daemon] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def daemon(self, overrides: dict[str, Any] | None = None, tag: str = "lightd") -> Daemon:
        d = Daemon(self.tmp / tag, self.prefix, overrides, name=tag)
        self.daemons.append(d)
        return d

    def spawn(self, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(args, cwd=str(ROOT), stdin=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        removed = remove_prefixed_containers(self.prefix)
        note(f"cleanup: stopped {len(self.daemons)} daemon(s), removed {removed} container(s) with prefix {self.prefix}")
        if os.environ.get("LIGHTD_BENCH_KEEP_TMP"):
            note(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def run(name: str, main: Callable[[Bench], Any]) -> None:
    """Run `main(bench)` (a coroutine function) and always clean up, also on SIGTERM or Ctrl-C."""
    ensure_engine()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(name)
    note(f"{name}: prefix {bench.prefix}, temp {bench.tmp}")
    engine_pid = dockerd_pid()
    try:
        try:
            import uvloop  # the bench client on the same loop kind as the daemon

            uvloop.run(main(bench))
        except ImportError:  # pragma: no cover
            asyncio.run(main(bench))
    finally:
        if dockerd_pid() != engine_pid:
            report("WARNING", f"dockerd was restarted during this run (pid {engine_pid} -> {dockerd_pid()}); "
                              "the figures above are not valid")
        bench.cleanup()


def pyspy_samples(pid: int, seconds: int, out_path: str) -> list[tuple[list[str], int]] | None:
    """`py-spy record` of a process (raw, non-blocking, 200 Hz) for `seconds`: each sampled stack (its frames,
    outermost first) with its count; None when py-spy is missing or fails (noted)."""
    if shutil.which("py-spy") is None:
        note("py-spy not installed: no profile (pip install py-spy)")
        return None
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
           "--nonblocking", "--format", "raw", "--output", out_path]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0:
        note(f"py-spy failed: {result.stderr[-500:]}")
        return None
    samples = []
    with open(out_path) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if count_text.isdigit():
                samples.append((stack.split(";"), int(count_text)))
    return samples


def profile(pid: int, seconds: int, out_path: str, category: Callable[[list[str]], str]) -> dict[str, Any] | None:
    """A py-spy profile of the daemon tallied three ways: by `category(frames)`, by leaf frame, and by the
    innermost frame of lightd's own code. None without py-spy."""
    samples = pyspy_samples(pid, seconds, out_path)
    if samples is None:
        return None
    tallies: dict[str, Any] = {"total": 0, "seconds": seconds}
    for key in ("by_category", "by_leaf", "by_lightd"):
        tallies[key] = collections.Counter()
    for frames, count in samples:
        tallies["total"] += count
        tallies["by_category"][category(frames)] += count
        tallies["by_leaf"][frames[-1]] += count
        own = [f for f in frames if "lightd/" in f and "/bench/" not in f]
        tallies["by_lightd"][own[-1] if own else "(no lightd frame)"] += count
    return tallies


def profile_shares(prof: dict[str, Any], tally: str, top: int | None = None, sep: str = "; ") -> str:
    """`<name> P%` of the `top` most sampled entries of one tally of a `profile` result (`by_category`,
    `by_leaf`, `by_lightd`), in shares of its busy samples."""
    total = prof["total"]
    return sep.join(f"{name} {count / total * 100:.0f}%" for name, count in prof[tally].most_common(top))


def profile_line(prof: dict[str, Any]) -> str:
    """`py-spy N samples in S s (~B% busy): <category> P%, ...` of a `profile` result."""
    total = prof["total"]
    parts = profile_shares(prof, "by_category", sep=", ")
    return f"py-spy {total} busy samples in {prof['seconds']} s (~{total / (prof['seconds'] * 200) * 100:.1f}% busy): {parts}"


# -- store seeding and API helpers -------------------------------------------------------------------------
async def seed_store(daemon: Daemon, servers: list[tuple[str, str]], install_state: str = "ready",
                     spec_extra: dict[str, Any] | None = None) -> None:
    """Insert volumes and container records straight into the daemon's SQLite store (daemon stopped).
    `servers` is [(internal_id, startup_command)]; each gets its own new volume directory."""
    from lightd.store import Store

    daemon.write_config()
    store = Store(daemon.db_path)
    await store.open()
    try:
        for internal_id, command in servers:
            volume_id = str(uuid.uuid4())
            path = daemon.data_dir / "volumes" / volume_id
            path.mkdir(parents=True, exist_ok=True)
            await store.insert_volume(volume_id, str(path.absolute()))
            await store.insert_container(internal_id, volume_id, minimal_spec(internal_id, volume_id, command, **(spec_extra or {})), install_state)
    finally:
        await store.close()


class Api:
    def __init__(self, session: aiohttp.ClientSession, daemon: Daemon) -> None:
        self.session = session
        self.daemon = daemon

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.daemon.url + path, headers=self.daemon.headers, **kw) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.read()
            return resp.status, body

    async def state(self, internal_id: str) -> str:
        status, body = await self.call("GET", f"/containers/{internal_id}")
        if status != 200:
            raise RuntimeError(f"GET /containers/{internal_id}: {status} {body}")
        return body["state"]

    async def wait_state(self, internal_id: str, states: set[str], timeout: float = 60.0, interval: float = 0.1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await self.state(internal_id)
            if state in states:
                return state
            await asyncio.sleep(interval)
        raise RuntimeError(f"{internal_id} not in {states} after {timeout}s")

    async def power(self, internal_id: str, action: str) -> None:
        status, body = await self.call("POST", f"/containers/{internal_id}/{action}")
        if status != 202:
            raise RuntimeError(f"{action} {internal_id}: {status} {body}")


async def bounded_gather(limit: int, coros: Iterable[Any]) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def count_running(api: Api) -> tuple[int, int]:
    """(servers listed, servers `running`) from one GET /containers."""
    status, body = await api.call("GET", "/containers", timeout=aiohttp.ClientTimeout(total=30))
    if status != 200:
        raise RuntimeError(f"GET /containers: {status} {body}")
    return body["count"], sum(1 for c in body["containers"] if c["state"] == "running")


async def start_servers(api: Api, ids: list[str], timeout: float, stall: float = 60.0, at_once: int = 8) -> tuple[int, list[str]]:
    """Start `ids` through the API, `at_once` at a time; wait until all run, or no progress for `stall` s, or
    `timeout`. Returns (how many run, the start errors)."""
    async def start(internal_id: str) -> str | None:
        try:
            await api.power(internal_id, "start")
            return None
        except Exception as exc:  # noqa: BLE001 - reported: a failure to scale is a result
            return f"{internal_id}: {exc}"

    errors = [e for e in await bounded_gather(at_once, (start(i) for i in ids)) if e]
    return await wait_running(api, len(ids), timeout, stall), errors


async def wait_running(api: Api, want: int, timeout: float, stall: float = 60.0) -> int:
    """Poll GET /containers until `want` servers run, or no progress for `stall` s, or `timeout`."""
    deadline = time.monotonic() + timeout
    best, best_at, running = -1, time.monotonic(), 0
    while time.monotonic() < deadline:
        try:
            _, running = await count_running(api)
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            note(f"  GET /containers while waiting: {exc!r}")
        if running >= want:
            break
        if running > best:
            best, best_at = running, time.monotonic()
        elif time.monotonic() - best_at > stall:
            break
        await asyncio.sleep(1)
    return running
