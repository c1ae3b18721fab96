"""start_overhead: how much time lightd adds to starting a server, against raw Docker, in the same run.

    python bench/start_overhead.py [--quick] [--reps N]

lightd: `POST /containers/:id/start` -> the `running` event on the console WebSocket (`/ws/:id`), for a
server whose start_pattern (`ready`) matches its first output line (`echo ready; sleep 1000`).
Raw: the same container config (built with lightd's own DockerEnvironment.server_config, so image, command,
init, limits and mounts are identical), created beforehand with Docker; timed: attach, start, read the first
output line (aiodocker from this process, the way lightd does it).
Between iterations both are SIGKILLed (not timed). The two alternate; 2 warm-ups each are dropped (the
first lightd start also creates the container). Reports medians and the ratio (target <= 1.15).
Default 20 timed repetitions each, --quick 10.
"""

from __future__ import annotations

import asyncio
import time

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, median, note, parse_args, percentile, ratio, report, seed_store, verdict

import aiodocker
import aiohttp

SERVER = "startbench"
COMMAND = "echo ready; sleep 1000"
TARGET = 1.15


async def lightd_start(api: Api, ws: aiohttp.ClientWebSocketResponse) -> dict[str, float]:
    """One timed start; returns seconds to the 202, to `starting`, to `running`."""
    t0 = time.perf_counter()
    status, body = await api.call("POST", f"/containers/{SERVER}/start")
    t_accepted = time.perf_counter() - t0
    if status != 202:
        raise RuntimeError(f"start: {status} {body}")
    t_starting = float("nan")
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        msg = await ws.receive_json(timeout=30)
        if msg.get("event") != "event":
            continue
        kind = msg["data"].get("type")
        if kind == "starting":
            t_starting = time.perf_counter() - t0
        elif kind == "running":
            return {"accepted": t_accepted, "starting": t_starting, "running": time.perf_counter() - t0}
        elif kind in ("crashed", "exit", "error"):
            raise RuntimeError(f"server did not start: {msg}")
    raise RuntimeError("no running event within 30 s")


async def lightd_kill(api: Api, ws: aiohttp.ClientWebSocketResponse) -> None:
    await api.power(SERVER, "kill")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = await ws.receive_json(timeout=30)
        if msg.get("event") == "event" and msg["data"].get("type") == "offline":
            return
    raise RuntimeError("no offline event within 30 s")


async def raw_start(container: aiodocker.containers.DockerContainer) -> float:
    """attach, start, first output line: seconds."""
    t0 = time.perf_counter()
    stream = container.attach(stdin=True, stdout=True, stderr=True, logs=False)
    await stream._init()  # connect now, as lightd does: output must be attached before the start
    try:
        await container.start()
        buf = b""
        deadline = t0 + 30
        while b"\n" not in buf and time.perf_counter() < deadline:
            message = await asyncio.wait_for(stream.read_out(), 30)
            if message is None:
                raise RuntimeError("raw container output ended before its first line")
            buf += message.data
        elapsed = time.perf_counter() - t0
        if not buf.startswith(b"ready"):
            raise RuntimeError(f"raw: unexpected first line {buf[:80]!r}")
        return elapsed
    finally:
        await stream.close()


async def raw_kill(container: aiodocker.containers.DockerContainer) -> None:
    await container.kill(signal="SIGKILL")
    await asyncio.wait_for(container.wait(), 30)


async def main(bench: Bench) -> None:
    args = ARGS
    reps = args.reps or (10 if args.quick else 20)
    warmups = 2
    daemon = bench.daemon()
    await seed_store(daemon, [(SERVER, COMMAND)], spec_extra={"start_pattern": "ready"})
    await daemon.start()
    note(f"daemon up on {daemon.url} (pid {daemon.pid})")

    # The raw container: exactly lightd's create body, with its own entrypoint copy and volume.
    from lightd.config import DockerConfig
    from lightd.docker.environment import DockerEnvironment
    from lightd.servers.mounts import MountPins
    from lightd.servers.models import ContainerSpec
    from lightd.servers.entrypoint import ENTRYPOINT

    raw_id = "rawstart"
    raw_volume = bench.tmp / "raw" / "volume"
    raw_data = bench.tmp / "raw" / "data"
    raw_volume.mkdir(parents=True)
    raw_data.mkdir(parents=True)
    (raw_data / "entrypoint.sh").write_text(ENTRYPOINT)
    spec = ContainerSpec.model_validate({"internal_id": raw_id, "image": common.TEST_IMAGE,
                                         "volume_id": "raw", "startup_command": COMMAND, "start_pattern": "ready"})
    env = DockerEnvironment(None, DockerConfig(container_prefix=bench.prefix), MountPins(bench.tmp / "mounts", []))  # type: ignore[arg-type]
    raw_config = env.server_config(spec, raw_volume.absolute(), raw_data.absolute())

    docker = aiodocker.Docker()
    try:
        container = await docker.containers.create(raw_config, name=env.name_of(raw_id))
        async with aiohttp.ClientSession() as session:
            api = Api(session, daemon)
            ws = await session.ws_connect(f"{daemon.url}/ws/{SERVER}?token={daemon.token}")
            try:
                lightd_runs: list[dict[str, float]] = []
                raw_runs: list[float] = []
                for i in range(warmups + reps):
                    # Alternate which goes first, so a drift in machine load hits both alike.
                    order = ("lightd", "raw") if i % 2 == 0 else ("raw", "lightd")
                    for which in order:
                        if which == "lightd":
                            result = await lightd_start(api, ws)
                            await lightd_kill(api, ws)
                            if i >= warmups:
                                lightd_runs.append(result)
                        else:
                            elapsed = await raw_start(container)
                            await raw_kill(container)
                            if i >= warmups:
                                raw_runs.append(elapsed)
                    if i >= warmups:
                        note(f"rep {i - warmups + 1}/{reps}: lightd {lightd_runs[-1]['running'] * 1000:.0f} ms, "
                             f"raw {raw_runs[-1] * 1000:.0f} ms")
            finally:
                await ws.close()
        lightd_ms = [r["running"] * 1000 for r in lightd_runs]
        raw_ms = [r * 1000 for r in raw_runs]
        accepted_ms = [r["accepted"] * 1000 for r in lightd_runs]
        starting_ms = [r["starting"] * 1000 for r in lightd_runs]
        lp50, rp50 = median(lightd_ms), median(raw_ms)
        r = ratio(lp50, rp50)
        report("start_overhead",
               f"lightd p50 {lp50:.0f} ms, raw docker p50 {rp50:.0f} ms, ratio {r:.2f} "
               f"(target <= {TARGET}, {verdict(r <= TARGET)}; n={reps} each, alternating)")
        report("start_overhead_spread",
               f"lightd min/p90 {min(lightd_ms):.0f}/{percentile(lightd_ms, 90):.0f} ms, "
               f"raw min/p90 {min(raw_ms):.0f}/{percentile(raw_ms, 90):.0f} ms, "
               f"added p50 {lp50 - rp50:+.0f} ms")
        report("start_overhead_breakdown",
               f"lightd p50: 202 answered after {median(accepted_ms):.1f} ms, 'starting' event "
               f"{median(starting_ms):.1f} ms, 'running' event {lp50:.0f} ms")
    finally:
        await docker.close()


if __name__ == "__main__":
    def _extra(parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--reps", type=int, default=0, help="timed repetitions of each (default 20, --quick 10)")

    ARGS = parse_args(__doc__, _extra)
    common.run("start_overhead", main)
