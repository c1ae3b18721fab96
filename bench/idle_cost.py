"""idle_cost: what 100 running, attached servers cost the daemon while they do nothing, against the same
daemon with 0 servers over the same period.

    python bench/idle_cost.py [--quick] [--servers N] [--seconds S] [--sockets] [--no-profile]

Phase 1 (baseline): the daemon with an empty store, idle; its CPU (user+system over wall time, % of one
core) and RSS (psutil on the daemon pid) over S seconds (60, --quick 15).
Phase 2: the same daemon (same config, restarted) with N server records (100, --quick 20) inserted into its
store; all are started over the API (`sleep 100000`, no start pattern) and, once all are `running`, the
daemon holds one console attach and one Docker stats stream per server. Same measurement over S seconds.
With --sockets, one console WebSocket per server is also open during the measurement (it receives the
stats frames).
Targets: RSS < 150 MB, CPU < 5 % of one core (reported, not asserted), plus the ratio to the baseline.
dockerd's CPU over both periods is shown as well (the stats streams cost the engine too).

lightd has no switch to turn the stats streams off, so the share of the cost that is Docker's stats API is
measured with py-spy (`pip install py-spy`): `py-spy record --nonblocking` for a few seconds after the
measurement, samples grouped by the lightd code path on the stack (stats sampler, console readers, engine
monitor, other). Skipped with --no-profile or when py-spy is missing.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import time
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, bounded_gather, note, parse_args, ratio, report, seed_store, verdict

import aiohttp
import psutil

TARGET_RSS_MB = 150.0
TARGET_CPU = 5.0


def dockerd() -> psutil.Process | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "dockerd":
            return proc
    return None


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return times.user + times.system


async def measure(pid: int, seconds: float) -> dict[str, float]:
    """CPU % of one core over `seconds`, RSS (MB) at the end and its maximum (sampled every second)."""
    proc = psutil.Process(pid)
    engine = dockerd()
    c0, e0, t0 = cpu_seconds(proc), cpu_seconds(engine), time.monotonic()
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
    return {
        "cpu": (cpu_seconds(proc) - c0) / wall * 100,
        "cpu_max_1s": max(per_second) if per_second else float("nan"),
        "rss": proc.memory_info().rss / 2**20,
        "rss_max": rss_max,
        "dockerd_cpu": (cpu_seconds(engine) - e0) / wall * 100 if engine else float("nan"),
        "fds": float(proc.num_fds()),
        "unix": float(len(proc.net_connections(kind="unix"))),
        "threads": float(proc.num_threads()),
    }


CATEGORIES = [
    ("stats sampler (Docker stats API)", re.compile(r"_sample \(.*lightd/servers/stats_sampler\.py|stats_stream|docker/stats_document\.py|aiodocker/containers\.py.*stats|_publish_final")),
    ("console readers", re.compile(r"_read_console|console\.py")),
    ("engine monitor", re.compile(r"engine_watch\.py|docker/monitor\.py|reconcile")),
    ("console websockets", re.compile(r"console_ws\.py")),
]


def profile(pid: int, seconds: int, out_path: str) -> dict[str, Any] | None:
    """py-spy record (raw, non-blocking); samples grouped by lightd code path and by leaf function."""
    if shutil.which("py-spy") is None:
        note("py-spy not installed: no profile (pip install py-spy)")
        return None
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
           "--nonblocking", "--format", "raw", "--output", out_path]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        note(f"py-spy failed: {result.stderr[-500:]}")
        return None
    by_category: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    by_lightd: collections.Counter[str] = collections.Counter()
    total = 0
    with open(out_path) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            for name, pattern in CATEGORIES:
                if pattern.search(stack):
                    by_category[name] += count
                    break
            else:
                by_category["other (HTTP server, event loop, aiohttp internals)"] += count
            frames = stack.split(";")
            by_leaf[frames[-1]] += count
            own = [f for f in frames if "lightd/" in f and "/bench/" not in f]
            by_lightd[own[-1] if own else "(no lightd frame)"] += count
    return {"total": total, "seconds": seconds, "by_category": by_category, "by_leaf": by_leaf, "by_lightd": by_lightd}


async def start_all(api: Api, ids: list[str], timeout: float, stall: float = 30.0) -> tuple[int, list[str]]:
    """Start every server (4 at a time); wait until all run, or no progress for `stall` s, or `timeout`.
    Returns (how many run, the start errors)."""
    async def start(i: str) -> str | None:
        try:
            await api.power(i, "start")
            return None
        except Exception as exc:  # noqa: BLE001 - reported, not raised: a failure to scale is a result
            return str(exc)

    errors = [e for e in await bounded_gather(4, (start(i) for i in ids)) if e]
    deadline = time.monotonic() + timeout
    best, best_at, running = -1, time.monotonic(), 0
    while time.monotonic() < deadline:
        try:
            status, body = await api.call("GET", "/containers", timeout=aiohttp.ClientTimeout(total=30))
            running = sum(1 for c in body["containers"] if c["state"] == "running")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            errors.append(f"GET /containers: {exc!r}")
        if running == len(ids):
            break
        if running > best:
            best, best_at = running, time.monotonic()
        elif time.monotonic() - best_at > stall:
            break
        await asyncio.sleep(1)
    return running, errors


def fmt(m: dict[str, float]) -> str:
    return f"CPU {m['cpu']:.2f}% (max 1 s {m['cpu_max_1s']:.1f}%), RSS {m['rss']:.1f} MB (max {m['rss_max']:.1f})"


async def main(bench: Bench) -> None:
    args = ARGS
    n = args.servers or (20 if args.quick else 100)
    seconds = args.seconds or (15 if args.quick else 60)
    daemon = bench.daemon()

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
        running, errors = await start_all(api, ids, timeout=60 + 3 * n)
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
        for ws in sockets:
            await ws.close()
        for task in drain:
            task.cancel()

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
    report("idle_cost streams",
           f"daemon holds {loaded['unix']:.0f} unix-socket connections (Docker) for {running} 'running' servers "
           f"(expected ~2 each: console attach + stats stream); {crashed} console reader tasks failed "
           f"(\"task lightd:console:<id> failed\" in the daemon log)")
    report("idle_cost dockerd",
           f"dockerd {loaded['dockerd_cpu']:.1f}% of one core with {running} servers attached vs {base['dockerd_cpu']:.1f}% with 0 "
           f"(the engine's side of the attach + stats streams); daemon fds {loaded['fds']:.0f}")
    if prof and prof["total"]:
        total = prof["total"]
        busy = total / (prof["seconds"] * 200) * 100
        parts = ", ".join(f"{name} {count / total * 100:.0f}%" for name, count in prof["by_category"].most_common())
        report("idle_cost profile", f"py-spy {total} busy samples in {prof['seconds']} s (~{busy:.1f}% busy): {parts}")
        leaves = "; ".join(f"{name} {count / total * 100:.0f}%" for name, count in prof["by_leaf"].most_common(6))
        report("idle_cost profile top frames", leaves)


if __name__ == "__main__":
    def _extra(parser: Any) -> None:
        parser.add_argument("--servers", type=int, default=0, help="running servers (default 100, --quick 20)")
        parser.add_argument("--seconds", type=float, default=0, help="measurement window (default 60, --quick 15)")
        parser.add_argument("--sockets", action="store_true", help="also one console WebSocket per server")
        parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")

    ARGS = parse_args(__doc__, _extra)
    common.run("idle_cost", main)
