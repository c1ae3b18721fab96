"""Console flood on a real daemon subprocess with the default throttle: one server prints a 10 MB line and
then 1M lines; a second server's console (a tick every 0.2 s, over a WebSocket) and the API stay responsive,
the throttle notice appears, the long line is cut into pieces of at most line_max_bytes, the daemon's RSS
stays bounded and the flooding server keeps running."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psutil
import pytest

from lightd.config import ConsoleConfig
from tests.reliability.daemon import Daemon
from tests.reliability.sweep_helpers import TICKER, Watcher, daemon_server, docker_running as daemon_running, percentile

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(170)]

LINE_MAX = ConsoleConfig().line_max_bytes
BIG_LINE = 10_000_000
FLOOD = ("sleep 2; head -c 10000000 /dev/zero | tr '\\0' x; echo; echo BIGLINE-DONE; sleep 1; "
         "seq 1 1000000; i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo FLOOD-DONE $i; sleep 0.25; done; sleep 1000")
RSS_CEILING = 500 * 1024 * 1024


async def latencies(daemon: Daemon, session: aiohttp.ClientSession, count: int, stop: asyncio.Event | None = None,
                    max_seconds: float = 120.0) -> list[float]:
    """GET /containers `count` times (or until `stop`), one at a time; each latency in seconds."""
    out: list[float] = []
    t_end = time.monotonic() + max_seconds
    while len(out) < count and time.monotonic() < t_end and not (stop is not None and stop.is_set()):
        t0 = time.monotonic()
        async with session.get(daemon.url + "/containers", headers=daemon.headers) as resp:
            assert resp.status == 200, resp.status
            await resp.read()
        out.append(time.monotonic() - t0)
        await asyncio.sleep(0.02)
    return out


async def test_flood_leaves_other_consoles_and_the_api_responsive(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    try:
        await daemon.start()
        proc = psutil.Process(daemon.process.pid)
        await daemon_server(daemon, "ticker", TICKER.format(period=0.2))
        await daemon_server(daemon, "flood", FLOOD, start=False)
        ws_url = daemon.url.replace("http", "ws")
        async with aiohttp.ClientSession() as session:
            ticks = Watcher(await session.ws_connect(f"{ws_url}/ws/ticker?token={node_token}"))
            flood = Watcher(await session.ws_connect(f"{ws_url}/ws/flood?token={node_token}"))
            before = await latencies(daemon, session, 100)

            rss: list[int] = []
            sampling = asyncio.Event()

            async def sample_rss() -> None:
                while not sampling.is_set():
                    rss.append(proc.memory_info().rss)
                    await asyncio.sleep(0.1)

            sampler = asyncio.ensure_future(sample_rss())
            cpu0 = sum(proc.cpu_times()[:2])
            rss_start = proc.memory_info().rss
            flood_started = time.time()
            status, body = await daemon.call("POST", "/containers/flood/start")
            assert status == 202, body

            done = asyncio.Event()

            async def wait_done() -> None:
                while not any(line.startswith("FLOOD-DONE") for _, line, _ in flood.console()):
                    await asyncio.sleep(0.1)
                done.set()

            waiter = asyncio.ensure_future(wait_done())
            during = await latencies(daemon, session, 100_000, stop=done, max_seconds=120)
            await asyncio.wait_for(waiter, 120)
            flood_ended = time.time()
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            sampling.set()
            await sampler

            # -- the numbers
            p99_before, p99_during = percentile(before, 99), percentile(during, 99)
            tick_delays = ticks.delays(flood_started, flood_ended)
            tick_lines = ticks.console(flood_started)
            gaps = [b[0] - a[0] for a, b in zip(tick_lines, tick_lines[1:])]
            pieces = [line for _, line, _ in flood.console() if line and set(line) == {"x"}]
            numbers = [line for _, line, _ in flood.console() if line.isdigit()]
            notices = [m for m in flood.of("daemon_message") if "throttling" in m]
            print(f"\n[flood] took {flood_ended - flood_started:.1f}s; daemon CPU {cpu:.1f}s")
            print(f"[flood] GET /containers p99 before {p99_before*1000:.1f} ms (n={len(before)}), "
                  f"during {p99_during*1000:.1f} ms (n={len(during)}), max during {max(during)*1000:.1f} ms")
            print(f"[flood] ticker: {len(tick_lines)} lines, delay p99 {percentile(tick_delays, 99)*1000:.0f} ms, "
                  f"max {max(tick_delays)*1000:.0f} ms, max gap {max(gaps):.2f}s")
            print(f"[flood] RSS start {rss_start/2**20:.0f} MiB, max {max(rss)/2**20:.0f} MiB; "
                  f"{len(numbers)} of 1000000 seq lines delivered, {len(notices)} throttle notices, "
                  f"{len(pieces)} pieces of the 10 MB line (largest {max(map(len, pieces))} bytes)")

            # -- the API stayed responsive: a generous ratio or a few seconds, never a tight absolute time
            assert p99_during < max(20 * p99_before, 2.0), (p99_before, p99_during)
            assert max(during) < 5.0
            assert len(during) >= 10
            # -- the other server's console kept flowing
            assert len(tick_lines) >= (flood_ended - flood_started) / 0.2 * 0.5
            assert max(tick_delays) < 3.0 and max(gaps) < 3.0
            # -- throttled, with the notice, and the flood was cut rather than delivered whole
            assert notices
            assert 0 < len(numbers) < 1_000_000
            # -- the 10 MB line arrived cut into pieces of at most line_max_bytes, none lost (it was in budget)
            assert all(len(p.encode()) <= LINE_MAX for p in pieces)
            assert len(pieces) >= BIG_LINE // LINE_MAX and sum(map(len, pieces)) == BIG_LINE
            # -- memory bounded
            assert max(rss) < RSS_CEILING, max(rss)
            # -- the flooding server was not killed
            status, view = await daemon.call("GET", "/containers/flood")
            assert status == 200 and view["state"] == "running", view
            assert daemon_running(container_prefix + "flood")
            assert ticks.close_code is None and flood.close_code is None
            await ticks.stop()
            await flood.stop()
        assert daemon.process.poll() is None
    finally:
        daemon.stop()
