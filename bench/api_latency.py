"""api_latency: lightd's REST latency and throughput with N servers (M of them running), against a bare aiohttp app.

    python bench/api_latency.py [--quick] [--duration S] [--connections N] [--servers N] [--running M]
        [--profile [list|list_gzip|get]]

N server records (default 200; issue 17's figure: --servers 1000 --running 500) and their volumes are
inserted straight into the daemon's SQLite store before it starts (lightd.store.Store; install_state
"ready", `sleep 100000`, no start pattern). With --running M, the first M of them are then started through
the API (`POST /containers/:id/start`, 8 at a time) on the busybox test image and the run waits until all M
are `running`: the daemon then holds M console attaches and samples M servers' stats every round while it
answers, and the listing carries their live state. The rest stay offline (no Docker container). Then `wrk`
(apt-get install -y wrk; 2 threads, 50 connections, with the auth headers) drives, for a fixed duration
(10 s, --quick 3 s):

- `GET /containers` (all N) and `GET /containers/:id` (a running one when M > 0) on the daemon as configured
  by default (log_level INFO: one access-log line per request); `GET /containers` once more with
  `Accept-Encoding: gzip` (as browsers and `curl --compressed` ask; the line says whether it was answered
  compressed and how many bytes were sent), and with that answer's ETag in `If-None-Match` (a poller's
  revalidation: a 304 with no body while nothing changes);
- the same two routes after the daemon is restarted with `log_level: WARNING` (no access log; it re-attaches
  the M running servers first), to show what the access log costs;
- the baseline: bench/hello_app.py (aiohttp + uvloop, no middleware) answering `/hello` (17 bytes) and
  `/static` (a copy of the daemon's own `GET /containers` answer, same size).

Ratios are lightd / baseline for req/s and p99. The p99 target (< 20 ms) is the issue's; it is reported, not
asserted. A single-client figure (one connection, sequential requests) shows the per-request service time
without queueing. The daemon's CPU during each run is shown (100 % = one core saturated: it is one process),
with its CPU time per answer (ms CPU/req: the figure least moved by other sessions' load on a shared
machine), and the machine's 1-minute load average after each run. With --profile, one more (unmeasured)
run of `GET /containers` (`list`, the default; `list_gzip`: with `Accept-Encoding: gzip`) or `GET
/containers/:id` (`get`) is sampled by py-spy (`pip install py-spy`): the share of samples with the listing,
the access log, the middleware or the response write on the stack, and the top frames.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import aiohttp
import common
import psutil
from common import (
    Api,
    Bench,
    count_running,
    free_port,
    median,
    note,
    parse_args,
    percentile,
    ratio,
    report,
    seed_store,
    start_servers,
    verdict,
    wait_http,
    wait_running,
)

TARGET_P99_MS = 20.0
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> dict[str, float]:
    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50": latency("50"), "p90": latency("90"), "p99": latency("99"),
        "requests": float(total.group(1)) if total else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0,
    }


async def run_wrk(url: str, headers: dict[str, str], connections: int, duration: float, pid: int | None) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    args.append(url)
    proc_stat = psutil.Process(pid) if pid else None
    cpu0 = sum(proc_stat.cpu_times()[:2]) if proc_stat else 0.0
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    wall = time.monotonic() - t0
    result = parse_wrk(out.decode())
    cpu = sum(proc_stat.cpu_times()[:2]) - cpu0 if proc_stat else float("nan")
    result["cpu"] = cpu / wall * 100
    # CPU time per answer: less sensitive than latency to other sessions' load on this shared machine
    result["cpu_ms"] = cpu / result["requests"] * 1000 if result["requests"] else float("nan")
    if result["non2xx"] or result["errors"] or result["requests"] == 0:
        note(f"wrk {url}: non-2xx {result['non2xx']:.0f}, socket errors {result['errors']:.0f}\n{out.decode()}{err.decode()}")
    return result


async def single_client(session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int, seconds: float) -> list[float]:
    """Sequential requests on one connection: per-request latency in ms (no queueing)."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status}")
        times.append((time.perf_counter() - t0) * 1000)
    return times


PROFILE_PARTS = [  # a sample goes to the part of its innermost frame matching one of these (frame by frame)
    ("response write", re.compile(r"aiohttp/(http_writer|web_response)\.py")),
    ("listing (cache check, encoding)", re.compile(r"lightd/servers/(listing|models)\.py|listing_json|ServerManager\.list ")),
    ("access log", re.compile(r"lightd/access_log\.py|logging/__init__\.py")),
    ("middleware (request id, metrics, errors, CORS, auth, query)",
     re.compile(r"lightd/(log_context|metrics|http_errors|cors|auth)\.py|lightd/api/(middleware|public|query)\.py")),
    ("stats sampler", re.compile(r"stats_sampler\.py|cgroup")),
    ("console readers", re.compile(r"_read_console|lightd/servers/console\.py")),
]


def profile(pid: int, seconds: int, out_path: str) -> dict[str, Any] | None:
    """py-spy record of the daemon (common.profile): busy samples by PROFILE_PARTS entry (the innermost one
    a stack shows; the rest: aiohttp's server, the event loop), and the top leaf and innermost-lightd frames."""
    def part(frames: list[str]) -> str:
        return next((name for frame in reversed(frames) for name, pattern in PROFILE_PARTS if pattern.search(frame)),
                    "other (aiohttp server, event loop)")

    return common.profile(pid, seconds, out_path, part)


def fmt(r: dict[str, float]) -> str:
    return f"{r['rps']:.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, {r['cpu_ms']:.3f} ms CPU/req"


def load1() -> float:
    return os.getloadavg()[0]


async def main(bench: Bench) -> None:
    args = ARGS
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    duration = args.duration or (3 if args.quick else 10)
    conns = args.connections
    n = args.servers
    m = min(args.running, n)
    ids = [f"api-{i:03d}" for i in range(n)]
    one = ids[min(100, n - 1)]  # running when m > 100; else offline (as before --running)
    if m:
        one = ids[min(100, m - 1)]

    # One daemon: measured as configured (INFO), then restarted with log_level WARNING. The same data dir,
    # so the running containers stay up across the restart and are re-attached.
    daemon = bench.daemon(json.loads(args.overrides) if args.overrides else None, tag="lightd")
    await seed_store(daemon, [(i, "sleep 100000") for i in ids])
    await daemon.start()
    note(f"daemon up: {daemon.url} (INFO); {n} servers")
    started = 0.0
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        if m:
            t0 = time.monotonic()
            running, errors = await start_servers(api, ids[:m], timeout=120 + 2 * m)
            started = time.monotonic() - t0
            note(f"  {running}/{m} running after {started:.0f} s ({len(errors)} start errors)")
            if running < m:
                first = errors[0] if errors else "no error answer: the starts never completed"
                raise RuntimeError(f"only {running}/{m} servers reached running; first error: {first}")
            await asyncio.sleep(5)  # let the starts' aftermath (first stats rounds, disk walks) pass
        listed, running = await count_running(api)
        if listed != n or running != m:
            raise RuntimeError(f"GET /containers lists {listed} servers, {running} running; expected {n}, {m}")
        # The baseline app serves a copy of lightd's own list answer as /static.
        async with session.get(daemon.url + "/containers", headers=daemon.headers) as resp:
            list_bytes = await resp.read()
        async with session.get(daemon.url + f"/containers/{one}", headers=daemon.headers) as resp:
            one_bytes = await resp.read()
        # What a client that accepts gzip (a browser, curl --compressed) is sent, undecoded.
        async with session.get(daemon.url + "/containers", headers={**daemon.headers, "Accept-Encoding": "gzip"},
                               auto_decompress=False) as resp:
            gzip_bytes = len(await resp.read())
            gzip_encoding = resp.headers.get("Content-Encoding", "identity")
            etag = resp.headers.get("ETag", "")
        # What a poller that sends the ETag back gets while nothing changed.
        revalidate = {**daemon.headers, "Accept-Encoding": "gzip", "If-None-Match": etag}
        async with session.get(daemon.url + "/containers", headers=revalidate) as resp:
            revalidated_status = resp.status
    body_file = bench.tmp / "list.json"
    body_file.write_bytes(list_bytes)
    hello_port = free_port()
    hello = bench.spawn([sys.executable, str(common.ROOT / "bench" / "hello_app.py"), str(hello_port), str(body_file)])
    hello_url = f"http://127.0.0.1:{hello_port}"
    await wait_http(hello_url + "/hello", 30, proc=hello)
    note(f"baseline app up on {hello_url}; GET /containers is {len(list_bytes)} bytes, GET /containers/{one} {len(one_bytes)} bytes")

    results: dict[str, dict[str, float]] = {}

    async def drive(plan: list[tuple[str, str, dict[str, str], int]]) -> None:
        for name, url, headers, pid in plan:
            note(f"wrk {name}: {conns} connections, {duration} s")
            results[name] = await run_wrk(url, headers, conns, duration, pid)
            results[name]["load1"] = load1()
            note(f"  {fmt(results[name])}, process CPU {results[name]['cpu']:.0f}%, load {results[name]['load1']:.2f}")
            await asyncio.sleep(1)

    await drive([
        ("hello", hello_url + "/hello", {}, hello.pid),
        ("static", hello_url + "/static", {}, hello.pid),
        ("list", daemon.url + "/containers", daemon.headers, daemon.pid),
        ("list_gzip", daemon.url + "/containers", {**daemon.headers, "Accept-Encoding": "gzip"}, daemon.pid),
        ("list_304", daemon.url + "/containers", revalidate, daemon.pid),
        ("get", daemon.url + f"/containers/{one}", daemon.headers, daemon.pid),
    ])
    async with aiohttp.ClientSession() as session:
        single = {
            "hello": await single_client(session, hello_url + "/hello", {}, 500, 10),
            "static": await single_client(session, hello_url + "/static", {}, 300, 10),
            "list": await single_client(session, daemon.url + "/containers", daemon.headers, 300, 15),
            "get": await single_client(session, daemon.url + f"/containers/{one}", daemon.headers, 500, 10),
        }
        _, still = await count_running(Api(session, daemon))

    daemon.stop()
    daemon.raw["log_level"] = "WARNING"
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        again = await wait_running(Api(session, daemon), m, timeout=60 + m) if m else 0
        note(f"daemon restarted with log_level WARNING; {again}/{m} running again after {time.monotonic() - t0:.0f} s")
    if m:
        await asyncio.sleep(5)
    await drive([
        ("list_quiet", daemon.url + "/containers", daemon.headers, daemon.pid),
        ("get_quiet", daemon.url + f"/containers/{one}", daemon.headers, daemon.pid),
    ])
    prof = None
    if args.profile:
        # A separate, unmeasured run: py-spy's sampling costs the daemon CPU of its own.
        seconds = max(2, int(duration) - 2)
        gzip_profiled = args.profile == "list_gzip"
        note(f"wrk {args.profile} (quiet) again with py-spy record {seconds} s")
        _, prof = await asyncio.gather(
            run_wrk(daemon.url + ("/containers" if args.profile != "get" else f"/containers/{one}"),
                    {**daemon.headers, **({"Accept-Encoding": "gzip"} if gzip_profiled else {})}, conns, duration,
                    daemon.pid),
            asyncio.to_thread(profile, daemon.pid, seconds, str(bench.tmp / "list.pyspy.txt")))

    hello_r, static_r = results["hello"], results["static"]
    size = f"{n} servers, {m} running"
    for route, key, base, base_name in (("GET /containers", "list", static_r, "static same-size body"),
                                         ("GET /containers/:id", "get", hello_r, "hello")):
        r = results[key]
        q = results[f"{key}_quiet"]
        report(f"api_latency {route}",
               f"lightd {fmt(r)} (CPU {r['cpu']:.0f}%); baseline aiohttp {base_name} {fmt(base)}; "
               f"ratio req/s {ratio(r['rps'], base['rps']):.2f}, ratio p99 {ratio(r['p99'], base['p99']):.1f}; "
               f"target p99 < {TARGET_P99_MS:.0f} ms {verdict(r['p99'] < TARGET_P99_MS)} "
               f"({conns} connections, {duration} s, {size}, {r['non2xx']:.0f} non-2xx, load {r['load1']:.2f})")
        report(f"api_latency {route} no-access-log",
               f"lightd log_level WARNING {fmt(q)}; vs INFO req/s ratio {ratio(q['rps'], r['rps']):.2f}; "
               f"target p99 < {TARGET_P99_MS:.0f} ms {verdict(q['p99'] < TARGET_P99_MS)} (load {q['load1']:.2f})")
    g = results["list_gzip"]
    report("api_latency GET /containers gzip",
           f"with Accept-Encoding: gzip (answered {gzip_encoding}, {gzip_bytes} bytes): lightd {fmt(g)}; "
           f"target p99 < {TARGET_P99_MS:.0f} ms {verdict(g['p99'] < TARGET_P99_MS)} (load {g['load1']:.2f})")
    r304 = results["list_304"]
    report("api_latency GET /containers If-None-Match",
           f"with the ETag sent back (answered {revalidated_status}, no body): lightd {fmt(r304)}; "
           f"target p99 < {TARGET_P99_MS:.0f} ms {verdict(r304['p99'] < TARGET_P99_MS)} (load {r304['load1']:.2f})")
    report("api_latency baseline hello",
           f"aiohttp hello {fmt(hello_r)}; lightd GET /containers/:id / hello req/s ratio {ratio(results['get']['rps'], hello_r['rps']):.2f}")
    report("api_latency single-client",
           "p50/p99 ms: " + ", ".join(f"{k} {median(v):.2f}/{percentile(v, 99):.2f}" for k, v in single.items())
           + f"; list / static p50 ratio {ratio(median(single['list']), median(single['static'])):.1f}"
           + f"; get / hello p50 ratio {ratio(median(single['get']), median(single['hello'])):.1f}")
    report("api_latency size",
           f"{n} servers, {m} running ({still} still running after the INFO runs, {again} re-attached after the "
           f"restart; starts took {started:.0f} s); GET /containers {len(list_bytes)} bytes, GET /containers/:id "
           f"{len(one_bytes)} bytes; {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if prof and prof["total"]:
        report(f"api_latency profile {args.profile}", common.profile_line(prof) + " (by innermost part)")
        report("api_latency profile top frames", common.profile_shares(prof, "by_leaf", 8))
        report("api_latency profile innermost lightd frames", common.profile_shares(prof, "by_lightd", 8))


if __name__ == "__main__":
    def _extra(parser: Any) -> None:
        parser.add_argument("--duration", type=float, default=0, help="seconds per wrk run (default 10, --quick 3)")
        parser.add_argument("--connections", type=int, default=50)
        parser.add_argument("--overrides", default="",
                            help='JSON merged into the daemon\'s config, for experiments: \'{"console": {"stats_interval_seconds": 60}}\'')
        parser.add_argument("--servers", type=int, default=200)
        parser.add_argument("--running", type=int, default=0,
                            help="start this many of the servers on the engine first (issue 17: 500 of 1000)")
        parser.add_argument("--profile", nargs="?", const="list", choices=["list", "list_gzip", "get"],
                            help="one more (unmeasured) run of a route (default list) with py-spy on the daemon")

    ARGS = parse_args(__doc__, _extra)
    common.run("api_latency", main)
