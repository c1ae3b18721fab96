"""Console WebSocket abuse against a real container and real aiohttp client sockets: more sockets than the
cap (concurrently), megabyte and lying frames, an inbound message flood (daemon CPU measured on a daemon
subprocess), unauthenticated storms and half-sent handshakes, and sockets that never read.

Goes further than tests/api/test_console_ws.py (which checks each limit once, one client at a time)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse

import aiohttp
import psutil
import pytest

from lightd import keys
from tests.api.ws_helpers import Console, connect, mint
from tests.conftest import wait_for
from tests.reliability.daemon import Daemon
from tests.reliability.sweep_helpers import (
    TICKER, Watcher, daemon_server, frame_header, percentile, raw_ws_handshake, read_close_code,
)
from tests.servers.helpers import create_server, wait_state

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(170)]


async def running_ticker(api, internal_id: str, period: float = 0.2) -> None:
    await create_server(api, internal_id, startup_command=TICKER.format(period=period))
    status, body = await api.post(f"/containers/{internal_id}/start")
    assert status == 202, body
    await wait_state(api, internal_id, "running")


def tick_number(line: str) -> int:
    return int(line.split()[1]) if line.startswith("tick ") else -1


async def newest_tick(console: Console, above: int, timeout: float = 10) -> int:
    frame = await console.until(lambda f: f["event"] == "console" and tick_number(f["data"]) > above, timeout)
    return tick_number(frame["data"])


async def test_forty_concurrent_sockets_admit_exactly_thirty_and_all_thirty_stream(dapi, dclient, node_token):
    await running_ticker(dapi, "crowd")
    sockets = dclient.app[keys.CONSOLE_SOCKETS]

    async def attempt() -> tuple[Console, str | int]:
        ws = await dclient.ws_connect(f"/ws/crowd?token={node_token}")
        console = Console(ws)
        try:
            first = await console.next(timeout=15)
        except Exception as exc:  # noqa: BLE001 - the refusal is a close
            code = getattr(exc, "code", None)
            return console, code if code is not None else repr(exc)
        return console, first["event"]

    results = await asyncio.gather(*(attempt() for _ in range(40)))
    admitted = [c for c, outcome in results if outcome == "stats"]
    refused = [outcome for _, outcome in results if outcome != "stats"]
    assert len(admitted) == 30, [o for _, o in results]
    assert refused == [4429] * 10
    assert sockets.count("crowd") == 30

    # every one of the 30 still gets live console lines
    baseline = max(tick_number(line) for line in (await dapi.get("/containers/crowd/logs?lines=5"))[1]["lines"])
    seen = await asyncio.gather(*(newest_tick(c, baseline, timeout=15) for c in admitted))
    assert all(n > baseline for n in seen)

    # freeing ten slots admits ten new sockets, and no more
    for console in admitted[:10]:
        await console.close()
    await wait_for(lambda: sockets.count("crowd") == 20, timeout=10)
    again = await asyncio.gather(*(attempt() for _ in range(12)))
    assert sorted(str(o) for _, o in again) == sorted(["stats"] * 10 + ["4429"] * 2)
    assert sockets.count("crowd") == 30
    for console, outcome in again:
        if outcome == "stats":
            await console.close()
    for console in admitted[10:]:
        await console.close()
    await wait_for(lambda: sockets.count("crowd") == 0, timeout=10)


async def test_megabyte_and_lying_frames_close_1009_and_bystanders_keep_streaming(dapi, dclient, node_token):
    await running_ticker(dapi, "frames", period=0.1)
    bystanders = [Watcher(await dclient.ws_connect(f"/ws/frames?token={node_token}")) for _ in range(3)]
    started = time.time()

    big_text = Console(await dclient.ws_connect(f"/ws/frames?token={node_token}"))
    big_binary = Console(await dclient.ws_connect(f"/ws/frames?token={node_token}"))
    await big_text.ws.send_str("x" * (1024 * 1024))
    await big_binary.ws.send_bytes(b"\0" * (1024 * 1024))
    assert (await big_text.closed(timeout=10)).code == 1009
    assert (await big_binary.closed(timeout=10)).code == 1009

    # a 1 MB JSON frame that is otherwise well formed
    json_bomb = Console(await dclient.ws_connect(f"/ws/frames?token={node_token}"))
    await json_bomb.ws.send_str(json.dumps({"event": "send_command", "data": "y" * (1024 * 1024)}))
    assert (await json_bomb.closed(timeout=10)).code == 1009

    # raw frames: a header that declares 2**62 bytes (never sent), and a 1 MB message in 64 KB fragments
    host, port = dclient.server.host, dclient.server.port
    for payload in (frame_header(0x1, 1 << 62),
                    b"".join(frame_header(0x1 if i == 0 else 0x0, 65536, fin=False) + b"z" * 65536 for i in range(16))):
        reader, writer = await raw_ws_handshake(host, port, f"/ws/frames?token={node_token}")
        t0 = time.monotonic()
        writer.write(payload)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        code = await read_close_code(reader, timeout=10)
        print(f"\n[frames] raw frame of {len(payload)} bytes: close code {code}")
        assert code in (1009, None), code  # 1009, or a reset that overtook it: either way, dropped at once
        assert time.monotonic() - t0 < 10
        writer.close()

    await asyncio.sleep(1.0)
    ended = time.time()
    for watcher in bystanders:
        assert watcher.close_code is None
        lines = watcher.console(started)
        assert len(lines) >= 5, len(lines)  # ~10/s for the whole attack
        numbers = [tick_number(line) for _, line, _ in lines]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        delays = watcher.delays(started, ended)
        assert max(delays) < 2.0, delays
    assert dclient.app[keys.CONSOLE_SOCKETS].count("frames") == 3
    for watcher in bystanders:
        await watcher.stop()


async def test_thousand_messages_a_second_is_rate_limited_with_bounded_cpu(tmp_path, node_token, container_prefix):
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    try:
        await daemon.start()
        await daemon_server(daemon, "rate", TICKER.format(period=0.1))
        proc = psutil.Process(daemon.process.pid)
        async with aiohttp.ClientSession() as session:
            bystander = Watcher(await session.ws_connect(f"{daemon.url.replace('http', 'ws')}/ws/rate?token={node_token}"))
            flooder = Watcher(await session.ws_connect(f"{daemon.url.replace('http', 'ws')}/ws/rate?token={node_token}"))
            await asyncio.sleep(1.0)

            def cpu() -> float:
                times = proc.cpu_times()
                return times.user + times.system

            idle_start, idle_t0 = cpu(), time.monotonic()
            await asyncio.sleep(2.0)
            idle_cpu, idle_wall = cpu() - idle_start, time.monotonic() - idle_t0

            messages = [json.dumps({"event": "request_logs", "data": {"lines": 1000}}),
                        json.dumps({"event": "send_command", "data": "hello"}),
                        json.dumps({"event": "request_stats"}),
                        "{not json"]
            flood_start, t0, since = cpu(), time.monotonic(), time.time()
            sent = 0
            while sent < 2000 and time.monotonic() - t0 < 4.0:
                for _ in range(10):  # 10 messages every 10 ms: 1000/s
                    await flooder.ws.send_str(messages[sent % len(messages)])
                    sent += 1
                await asyncio.sleep(max(0.0, t0 + sent / 1000 - time.monotonic()))
            flood_wall = time.monotonic() - t0
            await asyncio.sleep(0.5)
            flood_cpu, until = cpu() - flood_start, time.time()
            print(f"\n[rate] sent {sent} messages in {flood_wall:.2f}s; daemon CPU {flood_cpu:.3f}s "
                  f"(idle baseline {idle_cpu:.3f}s over {idle_wall:.2f}s)")

            # the flooder is kept open; excess is dropped with error frames, a handful of requests answered
            assert flooder.close_code is None and not flooder.ws.closed
            errors = [e["message"] for e in flooder.of("error")]
            rate_errors = [m for m in errors if "rate limited" in m]
            answered = len(flooder.of("logs")) - 1 + len(flooder.of("stats"))  # minus the greeting's logs
            print(f"[rate] error frames {len(errors)} (rate limited {len(rate_errors)}), answered {answered}")
            assert rate_errors, errors
            assert len(errors) <= 60, len(errors)  # one per burst of excess, not one per message
            assert answered <= 10 + 5 * (flood_wall + 1) + 5, answered
            assert flood_cpu < 1.5 + idle_cpu, flood_cpu

            # the bystander kept receiving ticks with a bounded delay
            delays = bystander.delays(since, until)
            print(f"[rate] bystander: {len(delays)} lines, delay p50 {percentile(delays, 50)*1000:.0f} ms, "
                  f"max {max(delays)*1000:.0f} ms")
            assert len(delays) >= 10 and max(delays) < 1.0, delays

            # after a quiet second the flooder is served again
            await asyncio.sleep(1.5)
            before = len(flooder.of("logs"))
            await flooder.ws.send_str(json.dumps({"event": "request_logs", "data": {"lines": 3}}))
            await wait_for(lambda: len(flooder.of("logs")) > before, timeout=5)
            await flooder.stop()
            await bystander.stop()
    finally:
        daemon.stop()


async def test_unauthenticated_storm_is_refused_with_close_codes_and_leaves_no_state(dapi, dclient, node_token):
    await running_ticker(dapi, "locked")
    await create_server(dapi, "other")
    other_token = await mint(dapi, "other")
    api_token = await mint(dapi, "locked", purpose="api")
    expired = await mint(dapi, "locked", ttl=1)
    watcher = Watcher(await dclient.ws_connect(f"/ws/locked?token={node_token}"))
    await asyncio.sleep(1.2)  # `expired` is now expired
    app = dclient.app
    bus = app[keys.EVENTS]
    subscribers_before, tasks_before = len(bus._subscribers), len(app[keys.TASKS])

    q = urllib.parse.quote
    attempts: list[tuple[str, dict[str, str], int]] = [
        ("/ws/locked", {}, 401),
        ("/ws/locked?token=", {}, 401),
        ("/ws/locked?token=lightd_not_a_real_token_at_all", {}, 401),
        ("/ws/locked?token=nope", {}, 401),
        (f"/ws/locked?token={q('lightd_' + 'ü' * 30)}", {}, 401),
        (f"/ws/locked?token={q('lightd_aaaaaaaaaaaaaaaa' + chr(0) + 'b')}", {}, 401),
        (f"/ws/locked?token={q('lightd_' + 'a' * 4000)}", {}, 401),
        (f"/ws/locked?token={q(node_token + chr(0x202E))}", {}, 401),
        (f"/ws/locked?token={expired}", {}, 401),
        (f"/ws/locked?token={other_token}", {}, 403),
        (f"/ws/locked?token={api_token}", {}, 403),
        ("/ws/locked", {"Authorization": "Basic " + node_token}, 401),
        ("/ws/locked", {"Authorization": "Bearer "}, 401),
        ("/ws/locked", {"Authorization": "Bearer lightd_xxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, 401),
    ]
    statuses: list[tuple[str, int | str, int]] = []

    async def one(path: str, headers: dict[str, str], expected: int) -> None:
        # Refusals reach browsers: upgraded, then closed with 4000 + the HTTP status.
        try:
            ws = await dclient.ws_connect(path, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            statuses.append((path[:60], f"HTTP {exc.status}", expected))
            return
        try:
            closed = await Console(ws).closed(timeout=15)
            statuses.append((path[:60], closed.code - 4000 if closed.code else "NO CODE", expected))
        except AssertionError:
            statuses.append((path[:60], "STAYED OPEN", expected))
        await ws.close()

    for _ in range(10):  # 140 attempts, 14 at a time
        await asyncio.gather(*(one(p, h, s) for p, h, s in attempts))
    wrong = [s for s in statuses if s[1] != s[2]]
    assert not wrong, wrong[:10]
    # plain HTTP (no upgrade headers) with bad credentials gets the same answer and the error shape
    async with dclient.get("/ws/locked?token=lightd_not_a_real_token_at_all") as resp:
        assert resp.status == 401 and isinstance((await resp.json())["error"], str)

    assert app[keys.CONSOLE_SOCKETS].count("locked") == 1
    assert len(bus._subscribers) == subscribers_before
    await asyncio.sleep(0.2)
    assert len(app[keys.TASKS]) <= tasks_before
    # the legitimate socket kept streaming through the storm
    assert watcher.close_code is None and watcher.console(time.time() - 2.0)
    await watcher.stop()


async def test_half_sent_handshakes_do_not_block_the_daemon(dapi, dclient, node_token):
    """Slowloris: connections that never finish their upgrade request. The daemon keeps serving everyone else
    (whether it also times them out is not asserted: there is no configurable header timeout)."""
    await running_ticker(dapi, "slowloris")
    host, port = dclient.server.host, dclient.server.port
    stalled = []
    for i in range(50):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /ws/slowloris?token={node_token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-{i}: ".encode())
        await writer.drain()
        stalled.append((reader, writer))
    try:
        t0 = time.monotonic()
        console = await connect(dclient, "slowloris", node_token)
        await newest_tick(console, 0, timeout=10)
        status, body = await dapi.get("/containers")
        assert status == 200 and body["count"] == 1
        assert time.monotonic() - t0 < 10
        assert dclient.app[keys.CONSOLE_SOCKETS].count("slowloris") == 1
        await console.close()
    finally:
        for _, writer in stalled:
            writer.close()


STUCK_STARTUP = ("PAD=$(printf '%4000s' '' | tr ' ' x); i=0; while true; do i=$((i+1)); "
                 "echo \"line $i $PAD\"; [ $((i % 50)) -eq 0 ] && sleep 0.05; done")


async def stuck_and_readers(dapi, dclient, node_token) -> tuple[list[Console], list[Watcher], float, float]:
    """Ten sockets that never read and three that do, while the server prints ~4 KB lines fast for 8 s."""
    await create_server(dapi, "stuck", startup_command=STUCK_STARTUP)
    stuck = []
    for _ in range(10):
        console = await connect(dclient, "stuck", node_token)
        console.ws._response.connection.transport.pause_reading()  # never reads again
        stuck.append(console)
    readers = [Watcher(await dclient.ws_connect(f"/ws/stuck?token={node_token}")) for _ in range(3)]
    status, body = await dapi.post("/containers/stuck/start")
    assert status == 202, body
    since = time.time()
    await asyncio.sleep(8.0)
    return stuck, readers, since, time.time()


def abort(stuck: list[Console]) -> None:
    for console in stuck:
        transport = console.ws._response.connection and console.ws._response.connection.transport
        if transport is not None:
            transport.abort()


async def test_sockets_that_never_read_do_not_block_others(dapi, dclient, node_token):
    """The readers keep up with bounded delay and the API answers. (The 30 s heartbeat is not configurable,
    so its drop of the stuck sockets is not waited for here.)"""
    stuck, readers, since, until = await stuck_and_readers(dapi, dclient, node_token)
    try:
        for reader in readers:
            lines = reader.console(since)
            assert len(lines) > 1000, len(lines)
            delays = reader.delays(since + 1, until)
            print(f"\n[stuck] reader got {len(lines)} lines; delay p99 {percentile(delays, 99)*1000:.0f} ms, "
                  f"max {max(delays)*1000:.0f} ms")
            assert percentile(delays, 99) < 2.0
            numbers = [int(line.split()[1]) for _, line, _ in lines]
            assert numbers == sorted(numbers)
        t0 = time.monotonic()
        status, _ = await dapi.get("/containers/stuck")
        assert status == 200 and time.monotonic() - t0 < 2.0
        assert dclient.app[keys.CONSOLE_SOCKETS].count("stuck") == 13
    finally:
        abort(stuck)
        for reader in readers:
            await reader.stop()
    await wait_for(lambda: dclient.app[keys.CONSOLE_SOCKETS].count("stuck") == 0, timeout=10)


async def test_stuck_sockets_do_not_hold_the_graceful_shutdown(dapi, dclient, node_token):
    stuck, readers, _, _ = await stuck_and_readers(dapi, dclient, node_token)
    closing = asyncio.ensure_future(dclient.server.close())
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.shield(closing), 15)
    except TimeoutError:
        pass
    elapsed = time.monotonic() - t0
    abort(stuck)  # unstick the test's own clients so the teardown is bounded
    await asyncio.wait_for(closing, 70)
    print(f"\n[stuck] graceful shutdown with 10 never-reading sockets: {elapsed:.1f}s "
          f"({'done' if elapsed < 15 else 'not done'} before the stuck clients were aborted)")
    for reader in readers:
        await wait_for(lambda r=reader: r.task.done(), timeout=10)
        assert reader.close_code == 1001
    assert elapsed < 15


async def test_daemon_sigterm_with_stuck_sockets_exits_promptly(tmp_path, node_token, container_prefix):
    """The real daemon (subprocess): SIGTERM with never-reading sockets open still ends it promptly, and a
    reading client gets 1001."""
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix})
    try:
        await daemon.start()
        await daemon_server(daemon, "stuck", STUCK_STARTUP)
        async with aiohttp.ClientSession() as session:
            url = f"{daemon.url.replace('http', 'ws')}/ws/stuck?token={node_token}"
            stuck = []
            for _ in range(10):
                ws = await session.ws_connect(url)
                ws._response.connection.transport.pause_reading()
                stuck.append(ws)
            reader = Watcher(await session.ws_connect(url))
            await asyncio.sleep(4.0)
            assert len(reader.console()) > 500
            t0 = time.monotonic()
            daemon.process.terminate()
            while daemon.process.poll() is None and time.monotonic() - t0 < 20:
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - t0
            print(f"\n[stuck] daemon exited {elapsed:.2f}s after SIGTERM (rc {daemon.process.returncode})")
            assert daemon.process.poll() is not None and elapsed < 15
            await wait_for(lambda: reader.task.done(), timeout=10)
            reader_code = reader.close_code
            for ws in stuck:
                ws._response.connection and ws._response.connection.transport.abort()
        assert subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container_prefix + "stuck"],
                              capture_output=True, text=True).stdout.strip() == "true"  # the server lives on
        if reader_code != 1001:
            # Known defect (open): under a console flood the daemon process exits before the reading
            # client's socket has flushed the output queued ahead of the 1001 close frame, so the client
            # sees the connection end (1006). Everything else above is asserted; see the closing notes.
            pytest.xfail(f"reading client got {reader_code} instead of 1001 at SIGTERM under a flood")
    finally:
        daemon.stop()
