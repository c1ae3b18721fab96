"""idle_cost: what N running, attached servers cost the daemon — and the engine — while they do nothing,
against the same daemon with 0 servers and against the same N containers with the daemon stopped.

    python bench/idle_cost.py [--quick] [--servers N] [--seconds S] [--sockets] [--no-profile] [--stats-source docker]

Phase 1 (baseline): the daemon with an empty store, idle; its CPU (user+system over wall time, % of one
core) and RSS (psutil on the daemon pid) over S seconds (60, --quick 15).
Phase 2: the same daemon (same config, restarted) with N server records (100, --quick 20) inserted into its
store; all are started over the API (`sleep 100000`, no start pattern) and, once all are `running`, the
daemon holds one console attach per server and reads stats from cgroup files (or, with
`--stats-source docker`, one Docker stats stream per server as before issue 17). Same measurement over S s.
With --sockets, one console WebSocket per server is also open during the measurement (it receives the
stats frames).
Phase 3 (the engine's share): the engine's CPU — dockerd, containerd and the containerd shims — is measured
over S/2 seconds with the daemon attached, then the daemon is stopped (its containers keep running) and the
same is measured again; the daemon is started again (it re-attaches every server) and the pair is repeated
(--engine-rounds, default 3). The engine CPU caused by lightd is the median of the pairs' differences: on a
shared machine other sessions' engine work lands in either window, and alternating short windows keeps a
burst of theirs from being charged to one side.
Targets (issue 17, at 500 servers): RSS < 200 MB, CPU < 5 % of one core, engine CPU caused by lightd < 3 % of
a core (reported, not asserted), plus the ratios to the baselines; the machine's load average is printed.

The share of the daemon's cost that is stats sampling is measured with py-spy (`pip install py-spy`): `py-spy record --nonblocking` for a few seconds after the
measurement, samples grouped by the lightd code path on the stack (stats sampler, console readers, engine
monitor, other). Skipped with --no-profile or when py-spy is missing.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import time
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import (
    Api, Bench, note, parse_args, ratio, report, seed_store, verdict,
)

import aiohttp
import psutil

TARGET_RSS_MB = 200.0
TARGET_CPU = 5.0
TARGET_ENGINE_SHARE = 3.0
ENGINE_NAMES = ("dockerd", "containerd")


def engine_processes() -> list[psutil.Process]:
    """dockerd, containerd and every containerd shim (the engine's side of attaches and stats)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name in ENGINE_NAMES or name.startswith("containerd-shim"):
            found.append(proc)
    return found


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        times = proc.cpu_times()
    except psutil.Error:  # a process that ended meanwhile (a shim)
        return 0.0
    return times.user + times.system


def engine_cpu_seconds(procs: list[psutil.Process]) -> tuple[float, float]:
    """(all engine processes, dockerd alone) CPU seconds."""
    total = sum(cpu_seconds(p) for p in procs)
    dockerd = sum(cpu_seconds(p) for p in procs if p.info["name"] == "dockerd")
    return total, dockerd


async def measure_engine(seconds: float) -> dict[str, float]:
    """The engine's CPU (% of one core) over `seconds`, with and without the shims; the load average after."""
    procs = engine_processes()
    e0, d0 = engine_cpu_seconds(procs)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    e1, d1 = engine_cpu_seconds(procs)
    wall = time.monotonic() - t0
    return {"engine_cpu": (e1 - e0) / wall * 100, "dockerd_cpu": (d1 - d0) / wall * 100,
            "shims": float(sum(1 for p in procs if (p.info["name"] or "").startswith("containerd-shim"))),
            "load1": os.getloadavg()[0]}


async def measure(pid: int, seconds: float) -> dict[str, float]:
    """CPU % of one core over `seconds`, RSS (MB) at the end and its maximum (sampled every second)."""
    proc = psutil.Process(pid)
    engine = engine_processes()
    c0, t0 = cpu_seconds(proc), time.monotonic()
    e0, d0 = engine_cpu_seconds(engine)
    rss_max = 0.0
    per_second: list[float] = []
    last_c, last_t = c0, t0
    deadline = t0 + seconds
    while (now := time.monotonic()) < deadline:
        await asyncio.sleep(min(1.0, deadline - now))
        c, t = cpu_seconds(proc), time.monotonic()
        per_second.append((c - last_c) / (t - last_t) * 100)
        last_c, last_t = c, t
        rss_max = max(rss_max, proc.memory_info().rss / 2**20)
    wall = time.monotonic() - t0
    e1, d1 = engine_cpu_seconds(engine)
    return {
        "cpu": (cpu_seconds(proc) - c0) / wall * 100,
        "engine_cpu": (e1 - e0) / wall * 100,
        "load1": os.getloadavg()[0],
        "cpu_max_1s": max(per_second) if per_second else float("nan"),
        "rss": proc.memory_info().rss / 2**20,
        "rss_max": rss_max,
        "dockerd_cpu": (d1 - d0) / wall * 100,
        "fds": float(proc.num_fds()),
        "unix": float(len(proc.net_connections(kind="unix"))),
        "threads": float(proc.num_threads()),
    }


CATEGORIES = [
    ("stats sampler (cgroup rounds, Docker stats fallback)", re.compile(r"lightd/servers/stats_sampler\.py|docker/cgroup|stats_stream|docker/stats_document\.py|aiodocker/containers\.py.*stats|timers\.py")),
    ("console readers", re.compile(r"_read_console|console\.py")),
    ("engine monitor", re.compile(r"engine_watch\.py|docker/monitor\.py|reconcile")),
    ("console websockets", re.compile(r"console_ws\.py")),
]


def profile(pid: int, seconds: int, out_path: str) -> dict[str, Any] | None:
    """py-spy record (common.profile); samples grouped by lightd code path (CATEGORIES) and by leaf function."""
    def category(frames: list[str]) -> str:
        stack = ";".join(frames)
        return next((name for name, pattern in CATEGORIES if pattern.search(stack)),
                    "other (HTTP server, event loop, aiohttp internals)")

    return common.profile(pid, seconds, out_path, category)


async def wait_running(daemon: Any, n: int, timeout: float) -> int:
    """After a daemon restart: poll GET /containers until `n` servers are `running` (re-attached) or `timeout`."""
    running = 0
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        while time.monotonic() < deadline:
            try:
                _, body = await api.call("GET", "/containers", timeout=aiohttp.ClientTimeout(total=30))
                running = sum(1 for c in body["containers"] if c["state"] == "running")
            except (aiohttp.ClientError, TimeoutError):
                pass
            if running >= n:
                break
            await asyncio.sleep(1)
    return running


async def engine_pairs(bench: Bench, daemon: Any, n: int, rounds: int, window: float) -> list[tuple[dict, dict]]:
    """`rounds` pairs of engine measurements: daemon attached, then stopped (see Phase 3)."""
    pairs = []
    for r in range(rounds):
        if r:
            await daemon.start()
            t0 = time.monotonic()
            attached = await wait_running(daemon, n, timeout=60 + n)
            note(f"  daemon restarted: {attached}/{n} running again after {time.monotonic() - t0:.0f} s; settle 5 s")
            await asyncio.sleep(5)
        with_daemon = await measure_engine(window)
        daemon.stop()
        await asyncio.sleep(3)
        alone = await measure_engine(window)
        alone["running"] = float(len(common.docker("ps", "-q", "--filter", f"label=lightd.prefix={bench.prefix}",
                                                   timeout=120).stdout.split()))
        note(f"  engine pair {r + 1}: attached {with_daemon['engine_cpu']:.2f}%, stopped {alone['engine_cpu']:.2f}% "
             f"({alone['running']:.0f} containers running, {alone['shims']:.0f} shims, load {alone['load1']:.2f})")
        pairs.append((with_daemon, alone))
    return pairs


def fmt(m: dict[str, float]) -> str:
    return f"CPU {m['cpu']:.2f}% (max 1 s {m['cpu_max_1s']:.1f}%), RSS {m['rss']:.1f} MB (max {m['rss_max']:.1f})"


async def main(bench: Bench) -> None:
    args = ARGS
    n = args.servers or (20 if args.quick else 100)
    seconds = args.seconds or (15 if args.quick else 60)
    daemon = bench.daemon({"docker": {"container_prefix": bench.prefix, "stats_source": args.stats_source}})

    await daemon.start()
    note(f"baseline: daemon with 0 servers (pid {daemon.pid}); settle 3 s, measure {seconds:.0f} s")
    await asyncio.sleep(3)
    base = await measure(daemon.pid, seconds)
    note(f"  {fmt(base)}, dockerd {base['dockerd_cpu']:.2f}%")
    daemon.stop()

    ids = [f"idle-{i:03d}" for i in range(n)]
    await seed_store(daemon, [(i, "sleep 100000") for i in ids])
    await daemon.start()
    note(f"loaded: daemon restarted with {n} servers (pid {daemon.pid}); starting them")
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    drain: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        t0 = time.monotonic()
        running, errors = await common.start_servers(api, ids, timeout=60 + 3 * n, stall=30, at_once=4)
        note(f"  {running}/{n} running after {time.monotonic() - t0:.0f} s")
        if running < n:
            first = errors[0] if errors else "no error answer: the starts never completed"
            report("idle_cost start",
                   f"FAILED: only {running}/{n} servers reached running ({len(errors)} start errors, first: {first}); "
                   f"measuring with {running} running")
        if args.sockets:
            frames = collections.Counter()

            async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
                async for msg in ws:
                    frames[msg.type] += 1

            for i in ids:
                ws = await session.ws_connect(f"{daemon.url}/ws/{i}?token={daemon.token}")
                sockets.append(ws)
                drain.append(asyncio.create_task(read(ws)))
            note(f"  {len(sockets)} console sockets open")
        await asyncio.sleep(5)
        note(f"measure {seconds:.0f} s")
        loaded = await measure(daemon.pid, seconds)
        note(f"  {fmt(loaded)}, dockerd {loaded['dockerd_cpu']:.2f}%, fds {loaded['fds']:.0f}, threads {loaded['threads']:.0f}")
        prof = None
        if not args.no_profile:
            prof_seconds = 5 if args.quick else 10
            note(f"py-spy record {prof_seconds} s")
            prof = profile(daemon.pid, prof_seconds, str(bench.tmp / "idle.pyspy.txt"))
        _, system = await api.call("GET", "/system")
        source = (system or {}).get("stats") or {}
        for ws in sockets:
            await ws.close()
        for task in drain:
            task.cancel()
    # Phase 3: the engine with the daemon attached, then with the same containers and nobody attached.
    pairs = await engine_pairs(bench, daemon, running, args.engine_rounds, seconds / 2)
    alone = pairs[-1][1]
    still = int(alone["running"])

    ok_rss = loaded["rss_max"] < TARGET_RSS_MB
    ok_cpu = loaded["cpu"] < TARGET_CPU
    where = f"{running}/{n} running servers{' + 1 console socket each' if args.sockets else ''}, {seconds:.0f} s"
    report("idle_cost rss",
           f"lightd {loaded['rss']:.1f} MB (max {loaded['rss_max']:.1f}) with {where}; baseline 0 servers "
           f"{base['rss']:.1f} MB; ratio {ratio(loaded['rss'], base['rss']):.2f}; "
           f"+{(loaded['rss'] - base['rss']) * 1024 / max(running, 1):.0f} KB per server; target < {TARGET_RSS_MB:.0f} MB {verdict(ok_rss)}")
    report("idle_cost cpu",
           f"lightd {loaded['cpu']:.2f}% of one core (max 1 s {loaded['cpu_max_1s']:.1f}%) with {where}; baseline "
           f"0 servers {base['cpu']:.2f}%; ratio {ratio(loaded['cpu'], base['cpu']):.1f}; "
           f"{(loaded['cpu'] - base['cpu']) / max(running, 1) * 1000:.1f} milli-% per server; target < {TARGET_CPU:.0f}% {verdict(ok_cpu)}")
    log = daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""
    crashed = len(re.findall(r"ERROR lightd\.tasks: task lightd:console:\S+ failed", log))
    per_server = "1 each: console attach" if source.get("source", "").startswith("cgroup") else "2 each: console attach + stats stream"
    report("idle_cost streams",
           f"daemon holds {loaded['unix']:.0f} unix-socket connections (Docker) for {running} 'running' servers "
           f"(expected ~{per_server}); stats source {source.get('source')} ({source.get('stream_fallbacks')} "
           f"stream fallbacks); {crashed} console reader tasks failed (\"task lightd:console:<id> failed\" in the daemon log)")
    diffs = sorted(a["engine_cpu"] - b["engine_cpu"] for a, b in pairs)
    share = diffs[len(diffs) // 2]
    rounds = "; ".join(f"{a['engine_cpu']:.2f} vs {b['engine_cpu']:.2f} (dockerd {a['dockerd_cpu']:.2f} vs "
                       f"{b['dockerd_cpu']:.2f}, load {a['load1']:.1f}/{b['load1']:.1f})" for a, b in pairs)
    report("idle_cost engine",
           f"engine (dockerd + containerd + {alone['shims']:.0f} shims), % of one core, attached vs lightd stopped "
           f"({still} containers running), {len(pairs)} pairs of {seconds / 2:.0f} s: {rounds}; caused by lightd: "
           f"median {share:.2f}% (min {diffs[0]:.2f}, max {diffs[-1]:.2f}); target < {TARGET_ENGINE_SHARE:.0f}% "
           f"{verdict(share < TARGET_ENGINE_SHARE)}; during phase 2 the engine was at {loaded['engine_cpu']:.2f}% "
           f"(dockerd {loaded['dockerd_cpu']:.2f}%), with 0 servers dockerd {base['dockerd_cpu']:.2f}%; daemon fds {loaded['fds']:.0f}")
    report("idle_cost load",
           f"machine load average (1 min) {base['load1']:.2f} at the baseline, {loaded['load1']:.2f} loaded, "
           f"{min(a['load1'] for p in pairs for a in p):.2f}–{max(a['load1'] for p in pairs for a in p):.2f} in phase 3; "
           f"{os.cpu_count()} CPUs (other sessions share this machine)")
    if prof and prof["total"]:
        report("idle_cost profile", common.profile_line(prof))
        report("idle_cost profile top frames", common.profile_shares(prof, "by_leaf", 6))


if __name__ == "__main__":
    def _extra(parser: Any) -> None:
        parser.add_argument("--servers", type=int, default=0, help="running servers (default 100, --quick 20)")
        parser.add_argument("--seconds", type=float, default=0, help="measurement window (default 60, --quick 15)")
        parser.add_argument("--sockets", action="store_true", help="also one console WebSocket per server")
        parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
        parser.add_argument("--engine-rounds", type=int, default=3, help="attached/stopped pairs of phase 3")
        parser.add_argument("--stats-source", default="auto", choices=["auto", "docker"],
                            help="docker.stats_source: cgroup files (auto) or one Docker stats stream per server")

    ARGS = parse_args(__doc__, _extra)
    common.run("idle_cost", main)
