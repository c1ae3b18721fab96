"""soak: does lightd stay flat? N servers restarted over and over, console sockets coming and going every
second and a steady API load, for a long time; the daemon's RSS, fds and tasks sampled every 10 s.

    python bench/soak.py [--quick] [--minutes M] [--warmup-minutes W] [--servers N] [--sockets S] [--on-settle CMD]

Load (issue 17 item 5), all at once for M minutes (30, --quick 2), the first W of them a warm-up (5, --quick
0.5):
- N servers (50) on the test image, each printing 5 lines a second (`start_pattern` "ready", a one-hour
  `start_timeout_seconds`, a shell `trap` that ends it on SIGTERM), so that its console history (1000 lines)
  is full within the warm-up; each is restarted (POST /restart) every 60 s, staggered so that one restart
  begins every 60/N s;
- S console sockets (20), each connecting to the next server in turn, reading its frames (stats, logs,
  console lines, events) and disconnecting every second; every 3rd cycle opens it with a single-use
  temporary token minted for it (POST /auth/tokens), every 4th also asks for logs and stats, every 5th ends
  without a close frame (the client just drops the connection);
- a steady API load: about 5 requests a second, in turn GET /containers, GET /containers/{id},
  GET /containers/{id}/stats, GET /system, GET /containers/{id}/logs.

Every 10 s under load: the daemon's RSS and open fds (psutil on its pid) and, from GET /metrics,
`lightd_asyncio_tasks` (every task on its loop), `lightd_owned_tasks` (its TaskOwner's) and
`lightd_timers_pending`; from GET /containers, how many servers are `running` and how many are in another
state (mid-restart).
Settle points, at the end of the warm-up and at the end: the load stops (the bench closes all its
connections), every server is `running` again, 35 s pass (the daemon's idle keep-alive connections to the
engine close: aiohttp's client looks every 15 s for those idle 15 s), and the same figures are read (tasks:
the least of 3 scrapes 1 s apart, so a stats round in flight does not count). Two settle points see the
same daemon doing the same thing: any difference in tasks or fds is left behind by the load. --on-settle
runs a shell command after each settle point (`{pid}` is the daemon's pid), e.g. to make a heap-dump hook
dump.

Figures: from the samples after the warm-up, the growth of each as the last sample minus the first and as
the least-squares slope times the window (robust to one noisy sample), and that slope projected over 25
minutes; and the growth between the two settle points. Targets: RSS growth < 5 MB over 25 min (the
measured growths, settled growth and projection all under it), fds growth < 10 (least squares and
settled), no task growth (settled). No absolute time is asserted; the machine's load average is printed
with every sample. --quick also lowers `console.history_lines` to 100 (full within its warm-up); a window
after the warm-up shorter than 10 min is too short to project from: its verdicts are indicative.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, bounded_gather, note, parse_args, report, seed_store, verdict

import aiohttp
import psutil

TARGET_RSS_MB = 5.0
TARGET_FDS = 10.0
PROJECT_MINUTES = 25.0
SAMPLE_SECONDS = 10.0
RESTART_PERIOD = 60.0
API_RATE = 5.0
SETTLE_IDLE = 35.0
COMMAND = ("trap 'exit 0' TERM; echo ready; i=0; while true; do i=$((i+1)); "
           "for j in 1 2 3 4 5; do echo \"tick $i.$j: a console line of the soak workload\"; done; sleep 1; done")


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: float
    owned: float
    timers: float
    cpu: float
    load1: float
    running: int
    busy: int


@dataclass
class Counters:
    restarts: int = 0
    restart_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    connects: int = 0
    connect_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    abrupt: int = 0
    tokens: int = 0
    frames: int = 0
    api: collections.Counter[int] = field(default_factory=collections.Counter)
    api_errors: collections.Counter[str] = field(default_factory=collections.Counter)


def fit(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second) of (t, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


GAUGES = ("lightd_asyncio_tasks", "lightd_owned_tasks", "lightd_timers_pending", "lightd_stats_stream_fallbacks")


async def scrape(session: aiohttp.ClientSession, daemon: common.Daemon) -> dict[str, float]:
    """The few node gauges of GET /metrics (plain text lines, no labels)."""
    async with session.get(daemon.url + "/metrics", headers={"Authorization": f"Bearer {daemon.token}"},
                           timeout=aiohttp.ClientTimeout(total=20)) as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in GAUGES:
            values[name] = float(rest)
    return values


async def states_of(session: aiohttp.ClientSession, daemon: common.Daemon) -> collections.Counter[str]:
    async with session.get(daemon.url + "/containers", headers=daemon.headers,
                           timeout=aiohttp.ClientTimeout(total=20)) as resp:
        return collections.Counter(c["state"] for c in (await resp.json())["containers"])


class Probe:
    """The daemon's figures: RSS, fds and CPU from psutil, gauges from GET /metrics."""

    def __init__(self, daemon: common.Daemon, t0: float) -> None:
        self.daemon = daemon
        self.proc = psutil.Process(daemon.pid)
        self.t0 = t0
        self.last_cpu, self.last_t = self._cpu(), time.monotonic()

    def _cpu(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system

    async def sample(self, session: aiohttp.ClientSession) -> Sample:
        try:
            gauges = await scrape(session, self.daemon)
            states = await states_of(session, self.daemon)
        except (TimeoutError, aiohttp.ClientError) as exc:
            note(f"scrape failed: {exc!r}")
            gauges, states = {}, collections.Counter()
        now, cpu = time.monotonic(), self._cpu()
        nan = float("nan")
        sample = Sample(now - self.t0, self.proc.memory_info().rss / 2**20, self.proc.num_fds(),
                        gauges.get("lightd_asyncio_tasks", nan), gauges.get("lightd_owned_tasks", nan),
                        gauges.get("lightd_timers_pending", nan), (cpu - self.last_cpu) / (now - self.last_t) * 100,
                        os.getloadavg()[0], states["running"], sum(states.values()) - states["running"])
        self.last_cpu, self.last_t = cpu, now
        return sample


def line(sample: Sample) -> str:
    return (f"t={sample.t:6.0f}s rss {sample.rss_mb:6.1f} MB fds {sample.fds:4d} tasks {sample.tasks:4.0f} "
            f"owned {sample.owned:4.0f} timers {sample.timers:3.0f} cpu {sample.cpu:5.1f}% load {sample.load1:.2f} "
            f"running {sample.running} other {sample.busy}")


async def sampler(session: aiohttp.ClientSession, probe: Probe, deadline: float, samples: list[Sample]) -> None:
    nxt = time.monotonic()
    while nxt <= deadline:
        await asyncio.sleep(max(nxt - time.monotonic(), 0))
        nxt += SAMPLE_SECONDS
        sample = await probe.sample(session)
        samples.append(sample)
        note(line(sample))


async def restarter(api: Api, ids: list[str], t0: float, deadline: float, counters: Counters) -> None:
    """Restart server i at t0 + i * 60/N + k * 60: each every 60 s, one restart every 60/N s."""
    step = RESTART_PERIOD / len(ids)
    k = 0
    while True:
        i = k % len(ids)
        due = t0 + k * step
        if due >= deadline:
            return
        await asyncio.sleep(max(due - time.monotonic(), 0))
        k += 1
        try:
            status, _ = await api.call("POST", f"/containers/{ids[i]}/restart", timeout=aiohttp.ClientTimeout(total=30))
        except (TimeoutError, aiohttp.ClientError) as exc:
            counters.restart_refused[type(exc).__name__] += 1
            continue
        if status == 202:
            counters.restarts += 1
        else:  # e.g. 409: its previous restart still running
            counters.restart_refused[str(status)] += 1


async def socket_worker(daemon: common.Daemon, session: aiohttp.ClientSession, ids: list[str], w: int,
                        deadline: float, counters: Counters) -> None:
    """Connect, read for most of a second, disconnect; once a second until `deadline`."""
    cycle = 0
    while (start := time.monotonic()) < deadline:
        server = ids[(w + cycle * 7) % len(ids)]
        abrupt = cycle % 5 == 4
        # An abrupt end needs its own session: closing it drops the TCP connection with no close frame.
        own = aiohttp.ClientSession() if abrupt else None
        try:
            token = daemon.token
            if cycle % 3 == 2:  # as a panel does: a single-use socket token for this container (its expiry armed)
                async with session.post(daemon.url + "/auth/tokens", headers=daemon.headers, json={
                        "purpose": "websocket", "container": server, "ttl_seconds": 300, "remove_on_use": True},
                        timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    minted = (await resp.json()).get("token") if resp.status in (200, 201) else None
                if minted is None:
                    counters.connect_errors[f"POST /auth/tokens {resp.status}"] += 1
                else:
                    token = minted
                    counters.tokens += 1
            ws = await (own or session).ws_connect(f"{daemon.url}/ws/{server}?token={token}",
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=2), autoping=True)
            counters.connects += 1
            if cycle % 4 == 1:
                await ws.send_json({"event": "request_logs", "data": {"lines": 20}})
                await ws.send_json({"event": "request_stats"})
            until = start + 0.8
            while (left := until - time.monotonic()) > 0:
                try:
                    msg = await ws.receive(timeout=left)
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    counters.connect_errors[f"ended {msg.type.name} {ws.close_code}"] += 1
                    break
                counters.frames += 1
            if abrupt:
                counters.abrupt += 1
            else:
                await ws.close()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            counters.connect_errors[type(exc).__name__] += 1
        finally:
            if own is not None:
                await own.close()
        cycle += 1
        await asyncio.sleep(max(start + 1.0 - time.monotonic(), 0))


async def api_load(api: Api, ids: list[str], deadline: float, counters: Counters) -> None:
    """About API_RATE requests a second, one at a time, over a few routes."""
    n = 0
    while (start := time.monotonic()) < deadline:
        server = ids[n % len(ids)]
        path = [
            "/containers", f"/containers/{server}", f"/containers/{server}/stats", "/system",
            f"/containers/{server}/logs?lines=50",
        ][n % 5]
        n += 1
        try:
            status, _ = await api.call("GET", path, timeout=aiohttp.ClientTimeout(total=30))
            counters.api[status] += 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            counters.api_errors[type(exc).__name__] += 1
        await asyncio.sleep(max(start + 1 / API_RATE - time.monotonic(), 0))


async def start_all(api: Api, ids: list[str], timeout: float) -> int:
    async def start(i: str) -> None:
        await api.power(i, "start")

    await bounded_gather(4, (start(i) for i in ids))
    deadline = time.monotonic() + timeout
    running = 0
    while time.monotonic() < deadline:
        _, body = await api.call("GET", "/containers")
        running = sum(1 for c in body["containers"] if c["state"] == "running")
        if running == len(ids):
            break
        await asyncio.sleep(1)
    return running


@dataclass
class Settled:
    t: float
    seconds: float
    """From the end of the load until every server was running again."""
    running: int
    rss_mb: float
    fds: int
    tasks: float
    owned: float
    timers: float


async def settle(probe: Probe, n: int, timeout: float) -> Settled:
    """Wait (at most `timeout`) until all `n` servers are running, then SETTLE_IDLE s; read the figures on
    connections that close after each request (the daemon keeps none of ours)."""
    t0 = time.monotonic()
    running = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        while time.monotonic() - t0 < timeout:
            try:
                states = await states_of(session, probe.daemon)
            except (TimeoutError, aiohttp.ClientError):
                states = collections.Counter()
            running = states["running"]
            if running == n:
                break
            await asyncio.sleep(1)
        seconds = time.monotonic() - t0
        await asyncio.sleep(SETTLE_IDLE)
        reads = []
        for _ in range(3):
            reads.append(await probe.sample(session))
            await asyncio.sleep(1)
    last = reads[-1]
    return Settled(last.t, seconds, running, last.rss_mb, last.fds, min(r.tasks for r in reads),
                   min(r.owned for r in reads), min(r.timers for r in reads))


async def load(daemon: common.Daemon, probe: Probe, ids: list[str], sockets: int, minutes: float,
               counters: Counters, samples: list[Sample]) -> None:
    """Everything at once for `minutes`, on connections closed at the end."""
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as sockets_session:
        api = Api(session, daemon)
        jobs = [
            asyncio.create_task(sampler(session, probe, deadline, samples)),
            asyncio.create_task(restarter(api, ids, t0, deadline, counters)),
            asyncio.create_task(api_load(api, ids, deadline, counters)),
            *(asyncio.create_task(socket_worker(daemon, sockets_session, ids, w, deadline, counters))
              for w in range(sockets)),
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), timeout=minutes * 60 + 120)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)


def growth(samples: list[Sample], attr: str) -> tuple[float, float, float]:
    """(last - first, least-squares slope x window, slope projected over PROJECT_MINUTES)."""
    points = [(s.t, float(getattr(s, attr))) for s in samples]
    slope = fit(points)
    window = points[-1][0] - points[0][0]
    return points[-1][1] - points[0][1], slope * window, slope * PROJECT_MINUTES * 60


def on_settle(command: str | None, daemon: common.Daemon) -> None:
    if command:
        result = subprocess.run(command.replace("{pid}", str(daemon.pid)), shell=True, check=False, timeout=120)
        note(f"--on-settle exited {result.returncode}")


async def main(bench: Bench) -> None:
    args = ARGS
    minutes = args.minutes or (2.0 if args.quick else 30.0)
    warmup = args.warmup_minutes if args.warmup_minutes is not None else (0.5 if args.quick else 5.0)
    n, s = args.servers, args.sockets
    console: dict[str, Any] = {"max_sockets": max(8, s)}
    if args.quick:
        console["history_lines"] = 100
    daemon = bench.daemon({"console": console})
    ids = [f"soak-{i:03d}" for i in range(n)]
    await seed_store(daemon, [(i, COMMAND) for i in ids],
                     spec_extra={"start_pattern": "ready", "start_timeout_seconds": 3600})
    await daemon.start()
    note(f"daemon pid {daemon.pid} with {n} servers; starting them")
    async with aiohttp.ClientSession() as session:
        t_start = time.monotonic()
        running = await start_all(Api(session, daemon), ids, timeout=60 + 2 * n)
    note(f"{running}/{n} running after {time.monotonic() - t_start:.0f} s; soak for {minutes:g} min "
         f"(warm-up {warmup:g} min), {s} sockets, restart every {RESTART_PERIOD:.0f} s each")
    if running < n:
        report("soak start", f"FAILED: only {running}/{n} servers running; soaking anyway")
    counters = Counters()
    samples: list[Sample] = []
    probe = Probe(daemon, time.monotonic())
    settle_timeout = 120.0 + 2 * n
    await load(daemon, probe, ids, s, warmup, counters, samples)
    first = await settle(probe, n, settle_timeout)
    note(f"settled after the warm-up ({first.seconds:.0f} s to all running): rss {first.rss_mb:.1f} MB, "
         f"fds {first.fds}, tasks {first.tasks:.0f}, owned {first.owned:.0f}, timers {first.timers:.0f}")
    on_settle(args.on_settle, daemon)
    measured_from = len(samples)
    await load(daemon, probe, ids, s, minutes - warmup, counters, samples)
    last = await settle(probe, n, settle_timeout)
    note(f"settled at the end ({last.seconds:.0f} s to all running): rss {last.rss_mb:.1f} MB, "
         f"fds {last.fds}, tasks {last.tasks:.0f}, owned {last.owned:.0f}, timers {last.timers:.0f}")
    on_settle(args.on_settle, daemon)
    async with aiohttp.ClientSession() as session:
        states = await states_of(session, daemon)
        gauges = await scrape(session, daemon)
    log = daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""
    errors = sum(1 for text in log.splitlines() if " ERROR " in text or "Traceback" in text)
    warnings = sum(1 for text in log.splitlines() if " WARNING " in text)

    print(f"{'t (s)':>7} {'RSS MB':>7} {'fds':>5} {'tasks':>6} {'owned':>6} {'timers':>6} {'cpu %':>6} {'load1':>6} "
          f"{'run':>4} {'other':>5}")
    for i, x in enumerate(samples):
        if i == measured_from:
            print(f"{first.t:7.0f} {first.rss_mb:7.1f} {first.fds:5d} {first.tasks:6.0f} {first.owned:6.0f} "
                  f"{first.timers:6.0f}   (settled: {first.running} running, load stopped)")
        print(f"{x.t:7.0f} {x.rss_mb:7.1f} {x.fds:5d} {x.tasks:6.0f} {x.owned:6.0f} {x.timers:6.0f} {x.cpu:6.1f} "
              f"{x.load1:6.2f} {x.running:4d} {x.busy:5d}", flush=True)
    print(f"{last.t:7.0f} {last.rss_mb:7.1f} {last.fds:5d} {last.tasks:6.0f} {last.owned:6.0f} "
          f"{last.timers:6.0f}   (settled: {last.running} running, load stopped)", flush=True)
    after = samples[measured_from:]
    short = " (window under 10 min: indicative)" if minutes - warmup < 10 else ""
    report("soak load",
           f"{minutes:g} min ({warmup:g} warm-up), {n} servers ({running} running at the start; at the end "
           f"{dict(states)}), {counters.restarts} restarts ({sum(counters.restart_refused.values())} refused: "
           f"{dict(counters.restart_refused)}), {counters.connects} console connects ({counters.tokens} with a "
           f"temporary token, {counters.abrupt} dropped without a close frame, {counters.frames} frames read, errors {dict(counters.connect_errors)}), "
           f"{sum(counters.api.values())} API requests (by status {dict(counters.api)}, errors "
           f"{dict(counters.api_errors)}); {gauges.get('lightd_stats_stream_fallbacks', float('nan')):.0f} stats "
           f"stream fallbacks at the end; daemon log: {errors} ERROR/Traceback lines, {warnings} WARNING lines; "
           f"load average {min(x.load1 for x in samples):.2f}–{max(x.load1 for x in samples):.2f} on "
           f"{os.cpu_count()} CPUs; daemon CPU median {sorted(x.cpu for x in after)[len(after) // 2]:.1f}% of a core")
    if len(after) < 3:
        report("soak", f"MISSED: only {len(after)} samples after the warm-up; run longer")
        return
    window = (after[-1].t - after[0].t) / 60
    where = f"over {window:.1f} min after a {warmup:g} min warm-up ({len(after)} samples)"
    raw, fitted, projected = growth(after, "rss_mb")
    settled = last.rss_mb - first.rss_mb
    ok = max(raw, fitted, projected, settled) < TARGET_RSS_MB
    report("soak rss",
           f"{after[0].rss_mb:.1f} -> {after[-1].rss_mb:.1f} MB {where}: growth {raw:+.2f} MB (last - first), "
           f"{fitted:+.2f} MB (least squares), slope {projected:+.2f} MB per {PROJECT_MINUTES:.0f} min; settled "
           f"{first.rss_mb:.1f} -> {last.rss_mb:.1f} MB ({settled:+.2f}); from {samples[0].rss_mb:.1f} MB at the "
           f"start; target < {TARGET_RSS_MB:.0f} MB over {PROJECT_MINUTES:.0f} min {verdict(ok)}{short}")
    raw, fitted, projected = growth(after, "fds")
    settled = last.fds - first.fds
    ok = max(fitted, settled) < TARGET_FDS
    report("soak fds",
           f"{after[0].fds} -> {after[-1].fds} {where} (range {min(x.fds for x in after)}–{max(x.fds for x in after)}, "
           f"sockets and restarts in flight): growth {raw:+.0f} (last - first), {fitted:+.1f} (least squares), "
           f"{projected:+.1f} per {PROJECT_MINUTES:.0f} min; settled {first.fds} -> {last.fds} ({settled:+d}); "
           f"target < {TARGET_FDS:.0f} {verdict(ok)}{short}")
    for attr, label in (("tasks", "asyncio tasks"), ("owned", "owned tasks"), ("timers", "timers pending")):
        raw, fitted, projected = growth(after, attr)
        values = [getattr(x, attr) for x in after]
        a, b = getattr(first, attr), getattr(last, attr)
        report(f"soak {attr}",
               f"{label}: settled {a:.0f} -> {b:.0f} ({b - a:+.0f}); under load {where}: range "
               f"{min(values):.0f}–{max(values):.0f}, growth {raw:+.0f} (last - first), {fitted:+.1f} (least "
               f"squares); target no growth (settled) {verdict(b <= a)}{short}")


if __name__ == "__main__":
    def _extra(parser: Any) -> None:
        parser.add_argument("--minutes", type=float, default=0, help="length of the soak (default 30, --quick 2)")
        parser.add_argument("--warmup-minutes", type=float, default=None, help="warm-up (default 5, --quick 0.5)")
        parser.add_argument("--servers", type=int, default=50, help="servers, each restarted every 60 s (default 50)")
        parser.add_argument("--sockets", type=int, default=20, help="console sockets reconnecting every second (default 20)")
        parser.add_argument("--on-settle", default=None, help="shell command run after each settle point ({pid}: the daemon)")

    ARGS = parse_args(__doc__, _extra)
    common.run("soak", main)
