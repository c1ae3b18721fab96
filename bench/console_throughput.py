"""console_throughput: console lines/s lightd delivers over its WebSocket, against a raw Docker attach of
the same container workload in the same run; and whether the default throttle holds while the API stays
responsive.

    python bench/console_throughput.py [--quick] [--lines N] [--clients50-lines N] [--runs50 K]

Workload: `yes <60-char line> | head -n N` (N = 200000, --quick 50000), then the process exits.
The raw baseline runs 10 N lines (N lines take a few ms through a raw attach: too short for a stable rate).

1. Throttle off (`console.throttle_lines: 0`, `console.send_queue` N + 1000 so a fast client loses nothing,
   `console.max_sockets` 64 so 50 sockets are allowed): lines/s to 1 WebSocket client, and to 50 clients
   (each client receives every line; the 50-client run uses N lines too, see --clients50-lines),
   from each client's first to last console frame. Raw baseline: the same container config (lightd's own
   DockerEnvironment.server_config), attach-then-start with aiodocker from this process, counting lines.
   Ratio lightd / raw; targets >= 0.8 (1 client) and >= 0.5 (50 clients, in each of --runs50 consecutive
   runs, default 3: their spread is printed). The 50-client figure is also
   given against 50 raw attaches of one container (Docker's own fan-out to 50 readers). Every client's
   received count is checked against the lines sent.
   The sockets are read by bench/wsreader.c (built with gcc into the run's temp dir): like the raw
   baseline it reads in large chunks and does little per line, so the figure is the daemon's, not the
   reader's; it checks every frame (see its header). The same 1-client run read by aiohttp's WebSocket
   client is shown too. The bench client's CPU (this process and wsreader) is shown: on 2 cores the
   reader competes with the daemon.
   Opt-in `?batch=1` (one `console_batch` frame per chunk of output) is measured the same way.
2. Default throttle (2000 lines / 100 ms): a flood of ~8 s of raw output (line count sized from the raw
   rate measured in part 1); lines delivered to 1 client against the budget (2000 per 100 ms over the flood's
   duration), and the API: p50/p99 of `GET /containers` (sequential, 1 connection) during the flood against
   the same loop with the daemon idle, same run.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, median, note, parse_args, percentile, ratio, report, seed_store, verdict
from ws_reader import NativeReaders, build

import aiodocker
import aiohttp
import orjson
import psutil

LINE = "lightd-console-throughput-benchmark-line-0123456789-abcdefgh"  # 60 characters
assert len(LINE) == 60
CONSOLE_PREFIX = '{"event":"console"'
BATCH_PREFIX = '{"event":"console_batch"'
TARGET_1 = 0.8
TARGET_50 = 0.5
READER_BINARY: Any = None  # bench/wsreader.c, built at the start of the run


def workload(lines: int) -> str:
    return f"yes {LINE} | head -n {lines}"


class Reader:
    """One console socket: counts console frames until the server's exit event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.lines = 0
        self.bad = 0
        self.first = math.nan
        self.last = math.nan
        self.exit_at = math.nan
        self.notices = 0

    async def greeting(self) -> None:
        """Skip the stats + logs frames sent on connect."""
        for _ in range(2):
            await self.ws.receive(timeout=10)

    async def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=max(deadline - time.monotonic(), 0.1))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket ended: {msg.type} {msg.data!r}")
            data: str = msg.data
            if data.startswith(BATCH_PREFIX):  # ?batch=1: several lines per frame
                now = time.perf_counter()
                if self.lines == 0:
                    self.first = now
                self.last = now
                batch = orjson.loads(data)["data"]["lines"]
                self.lines += len(batch)
                self.bad += sum(1 for line in batch if line != LINE)
                continue
            if data.startswith(CONSOLE_PREFIX):
                now = time.perf_counter()
                if self.lines == 0:
                    self.first = now
                self.last = now
                self.lines += 1
                if LINE not in data:
                    self.bad += 1
                continue
            frame = orjson.loads(data)
            if frame["event"] == "daemon_message":
                self.notices += 1
            elif frame["event"] == "event" and frame["data"].get("type") == "exit":
                self.exit_at = time.perf_counter()
                return
        raise RuntimeError(f"no exit event within {timeout}s ({self.lines} lines so far)")

    @property
    def rate(self) -> float:
        return self.lines / (self.last - self.first) if self.lines > 1 else math.nan

    async def close(self) -> None:
        await self.ws.close()


async def lightd_run(api: Api, daemon: common.Daemon, server: str, clients: int, timeout: float,
                     session: aiohttp.ClientSession, batch: bool = False, client: str = "native") -> list[Any]:
    """Open `clients` console sockets, start `server`, read until its exit event on every socket.
    client "native": bench/wsreader.c (large reads, a frame walk in C); "aiohttp": aiohttp's WebSocket client."""
    url = f"{daemon.url}/ws/{server}?token={daemon.token}{'&batch=1' if batch else ''}"
    if client == "native":
        readers = await NativeReaders.open(READER_BINARY, url, clients, LINE, timeout)
        try:
            await api.power(server, "start")
            results = await readers.results(timeout + 10)
        finally:
            readers.kill()
        await api.wait_state(server, {"offline"}, timeout=30)
        return results
    sockets: list[Reader] = []
    try:
        for _ in range(clients):
            sockets.append(Reader(await session.ws_connect(url, max_msg_size=0)))
        await asyncio.gather(*(r.greeting() for r in sockets))
        tasks = [asyncio.create_task(r.run(timeout)) for r in sockets]
        await api.power(server, "start")
        await asyncio.gather(*tasks)
        await api.wait_state(server, {"offline"}, timeout=30)
    finally:
        for r in sockets:
            await r.close()
    return sockets


async def raw_run(container: Any, timeout: float, readers: int = 1) -> tuple[list[int], float]:
    """attach `readers` streams, start, count lines on each until the output ends: (lines per reader,
    lines/s per reader from the first to the last chunk of any reader)."""
    streams = [container.attach(stdin=False, stdout=True, stderr=True, logs=False) for _ in range(readers)]
    for stream in streams:
        await stream._init()
    spans: list[tuple[float, float]] = []

    async def count(stream: Any) -> int:
        lines, first, last = 0, math.nan, math.nan
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await asyncio.wait_for(stream.read_out(), timeout)
            if message is None:
                break
            now = time.perf_counter()
            if lines == 0:
                first = now
            last = now
            lines += message.data.count(b"\n")
        spans.append((first, last))
        return lines

    try:
        await container.start()
        counts = await asyncio.gather(*(count(stream) for stream in streams))
    finally:
        for stream in streams:
            await stream.close()
    await asyncio.wait_for(container.wait(), 30)
    span = max(s[1] for s in spans) - min(s[0] for s in spans)
    return list(counts), (max(counts) / span if span > 0 else math.nan)


async def api_loop(api: Api, stop: asyncio.Event, limit_s: float) -> list[float]:
    """Sequential GET /containers until `stop` (bounded by `limit_s`): latencies in ms."""
    times: list[float] = []
    deadline = time.monotonic() + limit_s
    while not stop.is_set() and time.monotonic() < deadline:
        t0 = time.perf_counter()
        status, _ = await api.call("GET", "/containers")
        if status != 200:
            raise RuntimeError(f"GET /containers: {status}")
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.005)
    return times


def client_cpu() -> float:
    """CPU seconds of the bench client: this process and its finished children (wsreader)."""
    own = psutil.Process().cpu_times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system + children.ru_utime + children.ru_stime


def engine_procs() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("dockerd", "containerd", "containerd-shim-runc-v2")]


class CpuSplit:
    """Where the machine's CPU went during one run, from its creation on: the daemon (user/system), the
    engine (dockerd, containerd and the shims), the bench client, and the machine's idle share."""

    def __init__(self, daemon_pid: int) -> None:
        self.daemon = psutil.Process(daemon_pid)
        self.engine = engine_procs()
        self.d0 = self.daemon.cpu_times()
        self.e0 = sum(self._cpu(p) for p in self.engine)
        self.c0 = client_cpu()
        self.m0 = psutil.cpu_times()
        self.w0 = time.perf_counter()

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def wall(self) -> float:
        return time.perf_counter() - self.w0

    def daemon_seconds(self) -> float:
        d = self.daemon.cpu_times()
        return d.user + d.system - self.d0.user - self.d0.system

    def client_seconds(self) -> float:
        return client_cpu() - self.c0

    def summary(self) -> str:
        wall = self.wall()
        d = self.daemon.cpu_times()
        m = psutil.cpu_times()
        idle = (m.idle - self.m0.idle) / wall / psutil.cpu_count() * 100
        pct = lambda seconds: seconds / wall * 100  # noqa: E731
        return (f"CPU (% of one core): daemon user {pct(d.user - self.d0.user):.0f} + system {pct(d.system - self.d0.system):.0f}, "
                f"engine (dockerd, containerd, shims) {pct(sum(self._cpu(p) for p in self.engine) - self.e0):.0f}, "
                f"bench client {pct(client_cpu() - self.c0):.0f}; machine idle {idle:.0f}% of {psutil.cpu_count()} cores")


def per_client_rate(readers: list[Any], lines: int) -> float:
    """Lines/s each of several readers got, from the first line any of them saw to the last."""
    span = max(r.last for r in readers) - min(r.first for r in readers)
    return lines / span if span > 0 else math.nan


async def main(bench: Bench) -> None:
    args = ARGS
    n = args.lines or (50_000 if args.quick else 200_000)
    n50 = args.clients50_lines or n
    # Raw docker attach is so fast that N lines last a few ms (a noisy rate): it gets 10 N lines.
    raw_n = 10 * n
    global READER_BINARY
    READER_BINARY = build(bench.tmp)

    fast = bench.daemon({"console": {"throttle_lines": 0, "send_queue": max(n, n50) + 1000, "max_sockets": 64}}, tag="nothrottle")
    await seed_store(fast, [("flood1", workload(n)), ("flood50", workload(n50))])
    await fast.start()
    note(f"throttle-off daemon up on {fast.url}")

    from lightd.config import DockerConfig
    from lightd.docker.environment import DockerEnvironment
    from lightd.servers.mounts import MountPins
    from lightd.servers.models import ContainerSpec
    from lightd.servers.entrypoint import ENTRYPOINT

    env = DockerEnvironment(None, DockerConfig(container_prefix=bench.prefix), MountPins(bench.tmp / "mounts", []))  # type: ignore[arg-type]
    docker = aiodocker.Docker()
    raw_containers = {}
    try:
        for raw_id, lines in (("raw1", raw_n), ("raw50", n50)):
            vol, data = bench.tmp / raw_id / "volume", bench.tmp / raw_id / "data"
            vol.mkdir(parents=True)
            data.mkdir(parents=True)
            (data / "entrypoint.sh").write_text(ENTRYPOINT)
            spec = ContainerSpec.model_validate({"internal_id": raw_id, "image": common.TEST_IMAGE, "volume_id": "raw",
                                                 "startup_command": workload(lines)})
            raw_containers[raw_id] = await docker.containers.create(
                env.server_config(spec, vol.absolute(), data.absolute()), name=env.name_of(raw_id))

        timeout = 300.0
        async with aiohttp.ClientSession() as session:
            api = Api(session, fast)
            # -- 1 client, alternating with raw, 2 rounds each ------------------------------------------------
            raw1: list[float] = []
            one: list[Reader] = []
            one_cpu: list[tuple[float, float]] = []
            for round_ in range(2):
                for which in (("raw", "lightd") if round_ % 2 == 0 else ("lightd", "raw")):
                    if which == "raw":
                        (count,), rate = await raw_run(raw_containers["raw1"], timeout)
                        if count != raw_n:
                            note(f"raw run counted {count} lines, expected {raw_n}")
                        raw1.append(rate)
                        note(f"raw 1 reader: {rate:,.0f} lines/s ({count} lines)")
                    else:
                        meter = CpuSplit(fast.pid)
                        (reader,) = await lightd_run(api, fast, "flood1", 1, timeout, session)
                        wall, dsec = meter.wall(), meter.daemon_seconds()
                        one.append(reader)
                        one_cpu.append((dsec / wall * 100, meter.client_seconds() / wall * 100,
                                        dsec / max(reader.lines, 1) * 1e6))
                        note(f"lightd 1 client: {reader.rate:,.0f} lines/s ({reader.lines}/{n} lines)")
            raw_rate = median(raw1)
            l1 = median(r.rate for r in one)
            r1 = ratio(l1, raw_rate)
            received1 = [r.lines for r in one]
            report("console_throughput 1 client",
                   f"lightd {l1:,.0f} lines/s, raw docker attach {raw_rate:,.0f} lines/s ({raw_n} lines), ratio {r1:.2f} "
                   f"(target >= {TARGET_1}, {verdict(r1 >= TARGET_1)}); received {received1} of {n} sent per run, "
                   f"{sum(r.bad for r in one)} malformed; throttle off; CPU daemon {median(c[0] for c in one_cpu):.0f}%, "
                   f"bench client {median(c[1] for c in one_cpu):.0f}%; daemon CPU {median(c[2] for c in one_cpu):.1f} us per line")

            # The same run read by aiohttp's WebSocket client: how much of the figure the reader itself costs.
            meter = CpuSplit(fast.pid)
            (areader,) = await lightd_run(api, fast, "flood1", 1, timeout, session, client="aiohttp")
            acpu = meter.client_seconds() / meter.wall() * 100
            report("console_throughput 1 client aiohttp reader",
                   f"lightd {areader.rate:,.0f} lines/s read with aiohttp's client (bench client CPU {acpu:.0f}%), "
                   f"ratio {ratio(areader.rate, raw_rate):.2f} of raw; received {areader.lines} of {n}, {areader.bad} "
                   f"malformed (the figure above uses bench/wsreader.c, which reads like the raw baseline)")

            # -- 50 clients, against 1 raw reader (the baseline) and 50 raw attaches ---------------
            meter = CpuSplit(fast.pid)
            counts50, raw50_rate = await raw_run(raw_containers["raw50"], timeout, readers=50)
            rsplit = meter.summary()
            report("console_throughput raw 50 readers",
                   f"50 raw docker attaches of one container ({n50} lines): {raw50_rate:,.0f} lines/s per reader, "
                   f"{raw50_rate / raw_rate:.2f} of 1 raw reader; received min/max {min(counts50)}/{max(counts50)}; {rsplit}")
            runs50 = args.runs50 or (1 if args.quick else 3)
            ratios50: list[float] = []
            for run50 in range(runs50):
                meter = CpuSplit(fast.pid)
                readers = await lightd_run(api, fast, "flood50", 50, timeout, session)
                split50, wall, dsec = meter.summary(), meter.wall(), meter.daemon_seconds()
                dcpu, mcpu = dsec / wall * 100, meter.client_seconds() / wall * 100
                per_client = per_client_rate(readers, n50)
                r50 = ratio(per_client, raw_rate)
                ratios50.append(r50)
                got = [r.lines for r in readers]
                report(f"console_throughput 50 clients (run {run50 + 1} of {runs50})",
                       f"lightd {per_client:,.0f} lines/s per client ({per_client * 50:,.0f} frames/s in all), raw docker "
                       f"attach {raw_rate:,.0f} lines/s (1 reader, {raw_n} lines), ratio "
                       f"{r50:.3f} (target >= {TARGET_50}, {verdict(r50 >= TARGET_50)}); "
                       f"received min/max {min(got)}/{max(got)} of {n50} sent, {sum(1 for g in got if g == n50)}/50 clients "
                       f"got every line, {sum(r.bad for r in readers)} malformed; CPU daemon {dcpu:.0f}%, bench client {mcpu:.0f}%; daemon CPU "
                       f"{dsec / max(sum(got), 1) * 1e6:.1f} us per delivered frame ({dsec / n50 * 1e6:.0f} us per line); "
                       f"against 50 raw attaches {ratio(per_client, raw50_rate):.2f}; {split50}")
            report("console_throughput 50 clients spread",
                   f"{runs50} consecutive runs: ratios {', '.join(f'{r:.3f}' for r in ratios50)}; min {min(ratios50):.3f}, "
                   f"median {median(ratios50):.3f}, max {max(ratios50):.3f} (target >= {TARGET_50} in each: "
                   f"{verdict(min(ratios50) >= TARGET_50)})")
            # -- opt-in batching (?batch=1: the lines already queued go out as one console_batch frame) -----
            meter = CpuSplit(fast.pid)
            (breader,) = await lightd_run(api, fast, "flood1", 1, timeout, session, batch=True)
            bcpu = meter.daemon_seconds() / max(breader.lines, 1) * 1e6
            rb1 = ratio(breader.rate, raw_rate)
            report("console_throughput 1 client batch",
                   f"lightd ?batch=1 {breader.rate:,.0f} lines/s, raw docker attach {raw_rate:,.0f} lines/s, ratio "
                   f"{rb1:.2f} (target >= {TARGET_1}, {verdict(rb1 >= TARGET_1)}); received {breader.lines} of {n}, "
                   f"{breader.bad} malformed; daemon CPU {bcpu:.1f} us per line")
            meter = CpuSplit(fast.pid)
            breaders = await lightd_run(api, fast, "flood50", 50, timeout, session, batch=True)
            bsplit, bdsec = meter.summary(), meter.daemon_seconds()
            bper = per_client_rate(breaders, n50)
            rb50 = ratio(bper, raw_rate)
            bgot = [r.lines for r in breaders]
            report("console_throughput 50 clients batch",
                   f"lightd ?batch=1 {bper:,.0f} lines/s per client, raw docker attach {raw_rate:,.0f} lines/s, ratio "
                   f"{rb50:.3f} (target >= {TARGET_50}, {verdict(rb50 >= TARGET_50)}); received min/max "
                   f"{min(bgot)}/{max(bgot)} of {n50}, {sum(r.bad for r in breaders)} malformed; daemon CPU {bdsec / max(sum(bgot), 1) * 1e6:.2f} "
                   f"us per delivered line; against 50 raw attaches {ratio(bper, raw50_rate):.2f}; {bsplit}")
        fast.stop()

        # -- default throttle ----------------------------------------------------------------------------
        flood_seconds = 4 if args.quick else 8
        m = int(min(raw_rate * flood_seconds, 5_000_000))
        throttled = bench.daemon(tag="throttle")
        await seed_store(throttled, [("flood", workload(m)), ("other", "sleep 1000")])
        await throttled.start()
        cfg = throttled.raw.get("console", {})
        limit, window_ms = cfg.get("throttle_lines", 2000), cfg.get("throttle_window_ms", 100)
        note(f"default-throttle daemon up on {throttled.url}; flood of {m} lines")
        async with aiohttp.ClientSession() as session:
            api = Api(session, throttled)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(flood_seconds, stop.set)
            idle_times = await api_loop(api, stop, flood_seconds + 5)
            stop = asyncio.Event()
            loop_task = asyncio.create_task(api_loop(api, stop, timeout))
            prof_task = None
            if not args.no_profile:
                from idle_cost import profile

                async def delayed_profile() -> Any:
                    await asyncio.sleep(1)  # into the flood
                    return await asyncio.to_thread(profile, throttled.pid, 3, str(bench.tmp / "flood.pyspy.txt"))

                prof_task = asyncio.create_task(delayed_profile())
            t0 = time.monotonic()  # the clock of wsreader's timestamps
            (reader,) = await lightd_run(api, throttled, "flood", 1, timeout, session)
            stop.set()
            flood_times = await loop_task
            prof = await prof_task if prof_task else None
            duration = reader.exit_at - t0
        windows = max(reader.last - reader.first, 0) / (window_ms / 1000)
        budget = limit * (math.floor(windows) + 1)
        report("console_throughput throttle",
               f"delivered {reader.lines:,} of {m:,} lines sent in {reader.last - reader.first:.2f} s "
               f"(first to last line); budget {limit} per {window_ms} ms = {budget:,} over that span; "
               f"delivered/budget {reader.lines / budget:.2f} (holds: {verdict(reader.lines <= budget)}); "
               f"{reader.notices} throttle notices; daemon read the whole flood in {duration:.2f} s "
               f"({m / duration:,.0f} lines/s ingested, raw {raw_rate:,.0f})")
        p50i, p99i = median(idle_times), percentile(idle_times, 99)
        p50f, p99f = median(flood_times), percentile(flood_times, 99)
        report("console_throughput api during flood",
               f"GET /containers p50 {p50f:.1f} ms, p99 {p99f:.1f} ms during the flood (n={len(flood_times)}) vs idle "
               f"p50 {p50i:.1f} ms, p99 {p99i:.1f} ms (n={len(idle_times)}); p99 ratio {ratio(p99f, p99i):.1f}")
        if prof and prof["total"]:
            report("console_throughput flood profile",
                   f"py-spy {prof['seconds']} s into the flood, innermost lightd frame: "
                   + common.profile_shares(prof, "by_lightd", 5))
    finally:
        await docker.close()


if __name__ == "__main__":
    def _extra(parser: Any) -> None:
        parser.add_argument("--lines", type=int, default=0, help="lines for the 1-client runs (default 200000, --quick 50000)")
        parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of the flood")
        parser.add_argument("--clients50-lines", type=int, default=0, help="lines for the 50-client run (default: the same as --lines)")
        parser.add_argument("--runs50", type=int, default=0, help="consecutive 50-client runs, each against the raw "
                            "baseline, with their spread (default 3, --quick 1)")

    ARGS = parse_args(__doc__, _extra)
    common.run("console_throughput", main)
