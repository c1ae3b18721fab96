"""burst: N servers created then started at once through lightd's API until all are `running` (issue 17 item 4),
against a raw aiodocker script doing the same N creates, attaches and starts at once, in the same run.

    python bench/burst.py [--quick] [--servers N] [--rounds R]

lightd: N volumes are made first (untimed, as the raw side's directories are). Timed from the first request:
N concurrent tasks each `POST /containers` (the test image, `echo ready; sleep 100000`, start pattern
`^ready$`), wait for `install_state` ready, `POST /containers/:id/start`, and wait for `running` (the pattern
matched on its console). States are read by one poller (`GET /containers` every 20 ms) that wakes the tasks.
Raw: the same container config (lightd's own `DockerEnvironment.server_config`: image, entrypoint, limits,
hardening, binds), its directories and entrypoint made first; timed from the first request: N concurrent tasks
each create the container, attach (stdin, stdout, stderr, as lightd does before a start), start it, and read
its first output line (`ready`).
Each round (R, default 2; N 50, --quick 20) runs both, the order alternating; between them every container of
the round is removed (untimed). Target: lightd's time to all running ≤ 1.3× raw (median of the rounds);
reported, not asserted, with the load average. RESULTS.md has the measured runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 - puts the repo root on sys.path
from common import Api, Bench, Daemon, docker, median, note, parse_args, ratio, report, verdict

import aiodocker
import aiohttp

COMMAND = "echo ready; sleep 100000"
PATTERN = "^ready$"
TARGET = 1.3


class States:
    """One poller of `GET /containers`; tasks wait for a server to show a field's value."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.seen: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Condition()

    async def poll(self) -> None:
        while True:
            status, body = await self.api.call("GET", "/containers")
            if status == 200:
                async with self.changed:
                    self.seen = {c["internal_id"]: c for c in body["containers"]}
                    self.changed.notify_all()
            await asyncio.sleep(0.02)

    async def until(self, internal_id: str, field: str, value: str, timeout: float = 300) -> None:
        async def reached() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: self._shows(internal_id, field, value))
        await asyncio.wait_for(reached(), timeout)

    def _shows(self, internal_id: str, field: str, value: str) -> bool:
        current = self.seen.get(internal_id)
        if current and current["install_state"] == "failed":
            raise RuntimeError(f"{internal_id}: install failed: {current.get('install_error')}")
        return current is not None and current[field] == value


async def lightd_burst(daemon: Daemon, ids: list[str]) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        api = Api(session, daemon)
        volumes = await asyncio.gather(*(api.call("POST", "/volumes") for _ in ids))
        if any(status != 201 for status, _ in volumes):
            raise RuntimeError(f"volumes: {volumes[:3]}")
        states = States(api)
        poller = asyncio.ensure_future(states.poll())  # the bench's own task, cancelled below

        async def one(internal_id: str, volume_id: str) -> None:
            status, body = await api.call("POST", "/containers", json={
                "internal_id": internal_id, "image": common.TEST_IMAGE, "volume_id": volume_id,
                "startup_command": COMMAND, "start_pattern": PATTERN})
            if status != 202:
                raise RuntimeError(f"create {internal_id}: {status} {body}")
            await states.until(internal_id, "install_state", "ready")
            status, body = await api.call("POST", f"/containers/{internal_id}/start")
            if status != 202:
                raise RuntimeError(f"start {internal_id}: {status} {body}")
            await states.until(internal_id, "state", "running")

        try:
            began = time.monotonic()
            await asyncio.gather(*(one(i, v["volume_id"]) for i, (_, v) in zip(ids, volumes)))
            elapsed = time.monotonic() - began
        finally:
            poller.cancel()
        await asyncio.gather(*(api.call("DELETE", f"/containers/{i}") for i in ids))
        return elapsed


async def raw_burst(bench: Bench, ids: list[str]) -> float:
    from lightd.config import DockerConfig
    from lightd.docker.environment import DockerEnvironment
    from lightd.servers.models import ContainerSpec
    from lightd.servers.mounts import MountPins
    from lightd.servers.entrypoint import ENTRYPOINT

    env = DockerEnvironment(None, DockerConfig(container_prefix=bench.prefix), MountPins(bench.tmp / "mounts", []))  # type: ignore[arg-type]
    configs = {}
    for internal_id in ids:
        volume, data = bench.tmp / "raw" / internal_id / "volume", bench.tmp / "raw" / internal_id / "data"
        volume.mkdir(parents=True)
        data.mkdir(parents=True)
        (data / "entrypoint.sh").write_text(ENTRYPOINT)
        spec = ContainerSpec.model_validate({"internal_id": internal_id, "image": common.TEST_IMAGE, "volume_id": "raw",
                                             "startup_command": COMMAND, "start_pattern": PATTERN})
        configs[internal_id] = env.server_config(spec, Path(volume).absolute(), Path(data).absolute())
    pool = aiohttp.UnixConnector("/var/run/docker.sock", limit=0)  # as lightd's: no pool limit
    client = aiodocker.Docker(url="http://localhost", connector=pool)
    streams: list[Any] = []

    async def one(internal_id: str) -> None:
        container = await client.containers.create(configs[internal_id], name=env.name_of(internal_id))
        stream = container.attach(stdin=True, stdout=True, stderr=True)
        await stream.__aenter__()  # attached before the start, as lightd is
        streams.append(stream)
        await container.start()
        buffer = b""
        while b"\n" not in buffer:
            message = await asyncio.wait_for(stream.read_out(), 60)
            if message is None:
                raise RuntimeError(f"{internal_id}: output ended before its first line")
            buffer += message.data
        if not buffer.startswith(b"ready"):
            raise RuntimeError(f"{internal_id}: first line {buffer[:80]!r}")

    try:
        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in ids))
        elapsed = time.monotonic() - began
    finally:
        for stream in streams:
            await stream.close()
        await client.close()
        await pool.close()  # passed in: aiodocker leaves it open
    names = [env.name_of(i) for i in ids]
    for start in range(0, len(names), 25):
        docker("rm", "-f", *names[start:start + 25], timeout=300)
    return elapsed


async def main(bench: Bench) -> None:
    args = ARGS
    n = args.servers or (20 if args.quick else 50)
    report("burst load before", f"uptime: {os.getloadavg()}")
    daemon = bench.daemon()
    await daemon.start()
    results: list[tuple[float, float]] = []
    for number in range(args.rounds):
        light_ids = [f"b{number}l{i:02d}" for i in range(n)]
        raw_ids = [f"b{number}r{i:02d}" for i in range(n)]
        order = ("lightd", "raw") if number % 2 == 0 else ("raw", "lightd")
        figures: dict[str, float] = {}
        for which in order:
            await asyncio.sleep(2)  # the previous removals settle
            figures[which] = await (lightd_burst(daemon, light_ids) if which == "lightd" else raw_burst(bench, raw_ids))
            note(f"round {number + 1}: {which} {figures[which]:.2f} s")
        results.append((figures["lightd"], figures["raw"]))
        report(f"burst round {number + 1}", f"{n} created+started: lightd {figures['lightd']:.2f} s to all running, raw "
                                            f"aiodocker create+attach+start+first line {figures['raw']:.2f} s: ratio "
                                            f"{ratio(figures['lightd'], figures['raw']):.2f} (order {'/'.join(order)}; "
                                            f"load {os.getloadavg()[0]:.2f})")
    light, raw = median(r[0] for r in results), median(r[1] for r in results)
    r = ratio(light, raw)
    report("burst", f"{n} concurrent create+start: lightd median {light:.2f} s, raw median {raw:.2f} s, ratio {r:.2f} "
                    f"(target <= {TARGET}: {verdict(r <= TARGET)}; rounds {len(results)})")
    report("burst load after", f"uptime: {os.getloadavg()}")


def extra(parser: Any) -> None:
    parser.add_argument("--servers", type=int, default=0, help="servers per burst (default 50, --quick 20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each running both (default 2)")


if __name__ == "__main__":
    ARGS = parse_args(__doc__, extra)
    common.run("burst", main)
