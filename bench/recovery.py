"""recovery: kill -9 of lightd with N running servers, and its restart on the same data_dir (issue 17 item 3),
against a raw aiodocker list-and-attach of the same N containers.

    python bench/recovery.py [--quick] [--servers N] [--rounds R] [--concurrency C]

Setup: N server records (200, --quick 40) seeded into the store, started over the API (`sleep 100000`, no
start pattern) until all are `running`; the daemon runs with `docker.recovery_concurrency` C (16, the default).
Each round (R, default 2):
1. kill -9 of the daemon (its containers run on);
2. the raw baseline: a new Python process (this script with --raw-attach) that, with aiodocker, lists the
   run's server containers (one list, by label) and attaches to each (stdin, stdout, stderr: what lightd
   attaches), C at a time, timed from its spawn to its last attach (and inside it: from the list to the last
   attach); it then closes them and exits;
3. the daemon is started again, timed from its spawn: the first answer of `GET /api/v1/public/ping` (polled
   every 20 ms), the first `GET /containers` listing all N, and the end of the round after which
   `servers.recovery.pending` is 0 and `servers.attached` N (every console re-attached, every state
   compared): `GET /system` is polled every 250 ms (it asks the engine for its info: polled faster it would
   load the engine the raw side does not share) and the round's `last_round_ended_at` gives the time.
   lightd's own figure for the round (`last_round_seconds`, from its list to its last re-attach) is printed
   beside the raw script's list-to-last-attach.
Targets (medians over the rounds): first answer < 2 s; all re-attached < 10 s after the start; ≤ 1.5× the raw
list-and-attach: lightd's round against the raw script's list to last attach, and (printed too, with its own
verdict) from each process's spawn, which adds lightd's start-up (imports, app) to its side. Reported, not
asserted; the load average is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import PING, Api, Bench, Daemon, bounded_gather, median, note, parse_args, ratio, report, seed_store, verdict

import aiohttp

from lightd.timestamps import parse_rfc3339

TARGET_FIRST_ANSWER = 2.0
TARGET_ALL_ATTACHED = 10.0
TARGET_RATIO = 1.5
PROFILE = os.environ.get("RECOVERY_PROFILE", "")  # a path: py-spy's raw samples of each restart's first 6 s
PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")


# -- the raw baseline (run as its own process) --------------------------------------------------------------
async def raw_attach(prefix: str, concurrency: int) -> None:
    """List the run's server containers and attach to each, `concurrency` at a time; print the timings."""
    import aiodocker

    began = time.monotonic()
    # As lightd's client: no pool limit (every attach holds a connection for good; aiohttp's default is 100).
    pool = aiohttp.UnixConnector("/var/run/docker.sock", limit=0)
    docker = aiodocker.Docker(url="http://localhost", connector=pool)
    listed_at = time.monotonic()
    filters = json.dumps({"label": [f"lightd.prefix={prefix}", "lightd.role=server"]})
    containers = await docker.containers.list(all="1", filters=filters)
    listed = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    streams: list[Any] = []

    async def attach(container: Any) -> None:
        async with gate:
            stream = container.attach(stdin=True, stdout=True, stderr=True)
            await stream.__aenter__()  # connects (aiodocker otherwise connects at the first read)
            streams.append(stream)

    await asyncio.gather(*(attach(c) for c in containers))
    done = time.monotonic()
    print(json.dumps({"containers": len(containers), "list_s": listed - listed_at, "attach_s": done - listed_at,
                      "in_process_s": done - began}), flush=True)
    for stream in streams:
        await stream.close()
    await docker.close()
    await pool.close()  # passed in: aiodocker leaves it open


async def run_raw(prefix: str, concurrency: int) -> dict[str, float]:
    spawned = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--raw-attach", prefix, str(concurrency),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 300)  # type: ignore[union-attr]
    done = time.monotonic()
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    if not line:
        raise RuntimeError(f"raw attach failed: {err.decode()[-2000:]}")
    figures = json.loads(line)
    figures["from_spawn_s"] = done - spawned
    return figures


# -- lightd -------------------------------------------------------------------------------------------------
def compile_bytecode() -> None:
    """Compile lightd's and the benches' bytecode, as installing a package does. This environment sets
    PYTHONDONTWRITEBYTECODE: a module edited since its bytecode was last written would otherwise be compiled
    from source at every start of either process (measured: 0.18 s of lightd's start-up when none is
    compiled), which an installed daemon never pays. checked-hash: a .pyc is used only while its source's hash
    matches, so one written here never stands in for a later edit."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                    str(common.ROOT / "lightd"), str(common.ROOT / "bench")], check=True)


def kill9(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    daemon.stop()  # closes its log file; the process is gone already


def spawn(daemon: Daemon) -> None:
    """Start the daemon without waiting for it (Daemon.start, less its wait)."""
    daemon.write_config()
    daemon._log_file = open(daemon.log_path, "ab")  # noqa: SIM115 - closed by Daemon.stop
    daemon.proc = subprocess.Popen(
        [sys.executable, "-m", "lightd", "--config", str(daemon.config_path), "serve"],
        cwd=str(common.ROOT), stdout=daemon._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def restart_timed(daemon: Daemon, n: int) -> dict[str, float]:
    """Spawn the daemon; seconds from the spawn to its first answer, to a full listing, to every server
    re-attached and compared."""
    spawned, spawned_wall = time.monotonic(), time.time()
    spawn(daemon)
    spy = None
    if PROFILE:  # py-spy from the spawn on, for the first seconds (start-up and the round)
        spy = subprocess.Popen([PY_SPY, "record", "--pid", str(daemon.pid), "--duration", "6", "--rate", "1000",
                                "--nonblocking", "--format", "raw", "--output", PROFILE],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return await _restart_timed(daemon, n, spawned, spawned_wall)
    finally:
        if spy is not None:
            spy.wait(30)


async def _restart_timed(daemon: Daemon, n: int, spawned: float, spawned_wall: float) -> dict[str, float]:
    timings: dict[str, float] = {}
    short = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        for _ in range(3000):  # 60 s at 20 ms
            if daemon.proc is not None and daemon.proc.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
            try:
                async with session.get(daemon.url + PING, timeout=short) as resp:
                    if resp.status == 200:
                        timings["first_answer_s"] = time.monotonic() - spawned
                        break
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("the daemon did not answer within 60 s")
        status, listing = await api.call("GET", "/containers")
        if status != 200 or listing["count"] != n:
            raise RuntimeError(f"GET /containers: {status} {str(listing)[:300]}")
        timings["first_listing_s"] = time.monotonic() - spawned
        for _ in range(480):  # 120 s at 250 ms (each GET /system asks the engine for its version and info)
            status, system = await api.call("GET", "/system")
            servers = system["servers"] if status == 200 else None
            if servers and servers["recovery"]["rounds"] and servers["recovery"]["pending"] == 0 \
                    and servers["attached"] == n:
                # When the round that compared them all ended, by lightd's clock (the same host's).
                timings["all_attached_s"] = parse_rfc3339(servers["recovery"]["last_round_ended_at"]) - spawned_wall
                timings["seen_s"] = time.monotonic() - spawned
                timings["round_s"] = servers["recovery"]["last_round_seconds"]
                timings["running"] = servers["state"]["running"]
                return timings
            await asyncio.sleep(0.25)
    raise RuntimeError(f"not every server re-attached within 120 s: {servers}")


async def start_all(daemon: Daemon, ids: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, daemon)
        await bounded_gather(8, (api.power(i, "start") for i in ids))
        for _ in range(600):
            _, system = await api.call("GET", "/system")
            if system["servers"]["state"]["running"] == len(ids):
                return
            await asyncio.sleep(0.5)
    raise RuntimeError("not every server reached running within 300 s")


async def main(bench: Bench) -> None:
    args = ARGS
    n = args.servers or (40 if args.quick else 200)
    concurrency = args.concurrency
    report("recovery load before", f"uptime: {os.getloadavg()}")
    compile_bytecode()
    daemon = bench.daemon({"docker": {"recovery_concurrency": concurrency}})
    ids = [f"rec{i:03d}" for i in range(n)]
    await seed_store(daemon, [(i, "sleep 100000") for i in ids])
    await daemon.start()
    began = time.monotonic()
    await start_all(daemon, ids)
    note(f"{n} servers running after {time.monotonic() - began:.0f} s; settle 3 s")
    await asyncio.sleep(3)
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    for number in range(args.rounds):
        kill9(daemon)
        raw = await run_raw(bench.prefix, concurrency)
        if raw["containers"] != n:
            raise RuntimeError(f"raw baseline listed {raw['containers']} containers, not {n}")
        light = await restart_timed(daemon, n)
        rounds.append((raw, light))
        report(f"recovery round {number + 1}",
               f"lightd: first answer {light['first_answer_s']:.2f} s, full listing {light['first_listing_s']:.2f} s, "
               f"all {n} re-attached {light['all_attached_s']:.2f} s after spawn (its round: list to last re-attach "
               f"{light['round_s']:.2f} s; running {light['running']:.0f}); raw aiodocker: {raw['from_spawn_s']:.2f} s "
               f"after spawn (list {raw['list_s']:.3f} s, list to last attach {raw['attach_s']:.2f} s); "
               f"load {os.getloadavg()[0]:.2f}")
        await asyncio.sleep(2)
    first = median(light["first_answer_s"] for _, light in rounds)
    attached = median(light["all_attached_s"] for _, light in rounds)
    raw_spawn = median(raw["from_spawn_s"] for raw, _ in rounds)
    inner = median(light["round_s"] for _, light in rounds)
    raw_inner = median(raw["attach_s"] for raw, _ in rounds)
    report("recovery first answer", f"median {first:.2f} s after spawn (target < {TARGET_FIRST_ANSWER:g} s): "
                                    f"{verdict(first < TARGET_FIRST_ANSWER)}")
    report("recovery all re-attached", f"median {attached:.2f} s after spawn (target < {TARGET_ALL_ATTACHED:g} s: "
                                       f"{verdict(attached < TARGET_ALL_ATTACHED)})")
    report("recovery vs raw list-and-attach",
           f"lightd's round (its list to its last re-attach, log read-back included) {inner:.2f} s vs raw aiodocker "
           f"list to last attach ({concurrency} at a time) {raw_inner:.2f} s: ratio {ratio(inner, raw_inner):.2f} "
           f"(target <= {TARGET_RATIO:g}x: {verdict(ratio(inner, raw_inner) <= TARGET_RATIO)})")
    report("recovery vs raw from spawn",
           f"all re-attached {attached:.2f} s vs raw process done {raw_spawn:.2f} s after their spawn: ratio "
           f"{ratio(attached, raw_spawn):.2f} (<= {TARGET_RATIO:g}x: {verdict(ratio(attached, raw_spawn) <= TARGET_RATIO)}; "
           f"lightd's start-up before its first answer, {first:.2f} s, is in it: the raw script imports aiodocker only)")
    report("recovery load after", f"uptime: {os.getloadavg()}; servers {n}, concurrency {concurrency}, rounds {len(rounds)}")


def extra(parser: Any) -> None:
    parser.add_argument("--servers", type=int, default=0, help="running servers (default 200, --quick 40)")
    parser.add_argument("--rounds", type=int, default=2, help="kill -9 and restart rounds (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="docker.recovery_concurrency and the raw script's")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--raw-attach":
        try:
            import uvloop  # the loop lightd runs on

            uvloop.run(raw_attach(sys.argv[2], int(sys.argv[3])))
        except ImportError:  # pragma: no cover
            asyncio.run(raw_attach(sys.argv[2], int(sys.argv[3])))
    else:
        ARGS = parse_args(__doc__, extra)
        common.run("recovery", main)
