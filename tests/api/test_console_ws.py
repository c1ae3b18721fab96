"""The console WebSocket against the real Docker engine and real aiohttp client sockets."""

from __future__ import annotations

import asyncio

from lightd import keys
from lightd.app import create_app
from tests.api.ws_helpers import Console, connect, mint
from tests.conftest import Api, wait_for
from tests.servers.helpers import create_server, wait_state

ECHO_LOOP = 'echo ready; while read line; do echo "got: $line"; done'


async def app_with(aiohttp_client, make_config, container_prefix, auth_headers, **console):
    client = await aiohttp_client(create_app(make_config(docker={"container_prefix": container_prefix}, console=console)))
    return client, Api(client, auth_headers)


async def test_console_lines_arrive_in_order_on_three_clients(dapi, dclient, node_token):
    await create_server(dapi, "three", startup_command="sleep 1; seq 1 300; sleep 1000")
    consoles = [await connect(dclient, "three", node_token) for _ in range(3)]
    status, body = await dapi.post("/containers/three/start")
    assert status == 202, body
    for console in consoles:
        await console.console_line("300")
        assert console.lines() == [str(i) for i in range(1, 301)]
    first = consoles[0].seen
    assert all(set(f) == {"event", "data", "ts"} and isinstance(f["ts"], int) for f in first)
    assert [e["type"] for e in consoles[0].of("event")][:2] == ["starting", "running"]


async def test_slow_client_does_not_delay_the_others(aiohttp_client, make_config, container_prefix, auth_headers, node_token):
    client, api = await app_with(aiohttp_client, make_config, container_prefix, auth_headers, throttle_lines=5000)
    # ~12 MB of output: more than the kernel and transport buffers of a client that never reads.
    startup = "sleep 1; PAD=$(printf '%4000s' '' | tr ' ' x); seq 1 3000 | sed \"s/\\$/ $PAD/\"; echo END; sleep 1000"
    await create_server(api, "slow", startup_command=startup)
    slow = await connect(client, "slow", node_token)
    slow.ws._response.connection.transport.pause_reading()  # connects and never reads
    fast = [await connect(client, "slow", node_token) for _ in range(2)]
    await api.post("/containers/slow/start")
    for console in fast:
        await console.console_line("END", timeout=60)
        assert [line.split(" ", 1)[0] for line in console.lines()] == [str(i) for i in range(1, 3001)] + ["END"]
    assert (await wait_state(api, "slow", "running"))["state"] == "running"
    # The slow client resumes: it gets the newest lines, in order (older ones may have been dropped).
    slow.ws._response.connection.transport.resume_reading()
    await slow.console_line("END", timeout=60)
    numbers = [int(line.split(" ", 1)[0]) for line in slow.lines() if line != "END"]
    assert numbers == sorted(numbers) and numbers[-1] == 3000


async def test_flood_is_throttled_and_start_pattern_still_seen(
    aiohttp_client, make_config, container_prefix, auth_headers, node_token
):
    client, api = await app_with(aiohttp_client, make_config, container_prefix, auth_headers, throttle_lines=50)
    await create_server(api, "flood", startup_command="seq 1 20000; echo READY-MARK; sleep 1000", start_pattern="READY-MARK")
    console = await connect(client, "flood", node_token)
    await console.send("power", "start")
    await console.until(lambda f: f["event"] == "daemon_message" and "throttling" in f["data"])
    await console.event("running", timeout=30)
    assert len(console.lines()) < 20000
    assert (await wait_state(api, "flood", "running"))["state"] == "running"


async def test_send_command_reaches_the_process(dapi, dclient, node_token):
    await create_server(dapi, "cmd", startup_command=ECHO_LOOP)
    console = await connect(dclient, "cmd", node_token)
    await console.send("send_command", "too early")
    refused = await console.until(lambda f: f["event"] == "daemon_message")
    assert "not running" in refused["data"]
    await console.send("power", "start")
    await console.console_line("ready")
    await console.send("send_command", "hello world")
    await console.console_line("got: hello world")
    # upstream Lightd's and Wings-style shapes
    await console.ws.send_json({"send_command": ["upstream"]})
    await console.console_line("got: upstream")
    await console.ws.send_json({"event": "send command", "args": ["wings"]})
    await console.console_line("got: wings")


async def test_power_over_the_socket(dapi, dclient, node_token):
    await create_server(dapi, "pwr")
    console = await connect(dclient, "pwr", node_token)
    await console.send("power", "start")
    await console.event("running")
    await console.send("power", "start")
    error = await console.until(lambda f: f["event"] == "error")
    assert "already running" in error["data"]["message"]
    await console.ws.send_json({"power": ["stop"]})
    await console.event("offline", timeout=40)
    await console.ws.send_json({"event": "set state", "args": ["start"]})
    await console.event("running")
    await console.send("power", "kill")
    await console.event("offline")
    await console.send("power", "explode")
    error = await console.until(lambda f: f["event"] == "error")
    assert "power" in error["data"]["message"]


async def test_request_logs_after_reconnect(dapi, dclient, node_token):
    await create_server(dapi, "logs", startup_command="for i in 1 2 3 4 5; do echo line-$i; done; sleep 1000")
    console = await connect(dclient, "logs", node_token)
    await console.send("power", "start")
    await console.console_line("line-5")
    await console.close()
    again = await connect(dclient, "logs", node_token, greet=False)
    assert (await again.next())["event"] == "stats"
    assert (await again.next())["data"]["lines"] == [f"line-{i}" for i in range(1, 6)]
    await again.send("request_logs", {"lines": 2})
    assert (await again.until(lambda f: f["event"] == "logs"))["data"]["lines"] == ["line-4", "line-5"]
    await again.ws.send_json({"logs": ["3"]})
    assert (await again.until(lambda f: f["event"] == "logs"))["data"]["lines"] == ["line-3", "line-4", "line-5"]
    await again.send("request_logs")
    assert len((await again.until(lambda f: f["event"] == "logs"))["data"]["lines"]) == 5


async def test_auth_failures_close_after_the_upgrade(dapi, dclient, node_token):
    """A browser cannot read a refused handshake's status: the socket is upgraded, then closed 44xx. A plain
    GET gets the HTTP status (tests/api/test_ws_auth.py goes through every case)."""
    await create_server(dapi, "a1")
    await create_server(dapi, "a2")
    other = await mint(dapi, "a2")
    for path, status in [
        ("/ws/a1", 401),
        ("/ws/a1?token=lightd_not_a_real_token_at_all", 401),
        (f"/ws/a1?token={other}", 403),
        (f"/ws/nope?token={node_token}", 404),
    ]:
        refused = Console(await dclient.ws_connect(path))
        assert (await refused.closed()).code == 4000 + status, path
        async with dclient.get(path) as resp:
            assert resp.status == status and "error" in await resp.json()
    # a scoped websocket token works on its own container, also as a Bearer header
    mine = await mint(dapi, "a1")
    ws = await dclient.ws_connect("/ws/a1", headers={"Authorization": f"Bearer {mine}"})
    assert (await Console(ws).next())["event"] == "stats"
    await ws.close()
    # an api-purpose token is not a socket token
    api_token = await mint(dapi, "a1", purpose="api")
    refused = Console(await dclient.ws_connect(f"/ws/a1?token={api_token}"))
    assert (await refused.closed()).code == 4403


async def test_websocket_token_is_refused_on_rest(dapi, dclient):
    await create_server(dapi, "conf")
    token = await mint(dapi, "conf")
    status, body = await dapi.get("/containers/conf", headers={"Authorization": f"Bearer {token}"})
    assert status == 403, body
    status, body = await dapi.post("/containers/conf/start", headers={"Authorization": f"Bearer {token}"})
    assert status == 403, body


async def test_expired_temporary_token_closes_4401(dapi, dclient):
    await create_server(dapi, "exp")
    token = await mint(dapi, "exp", ttl=1)
    console = await connect(dclient, "exp", token)
    warning = await console.until(lambda f: f["event"] == "daemon_message")
    assert "expires" in warning["data"]
    closed = await console.closed(timeout=10)
    assert closed.code == 4401
    again = Console(await dclient.ws_connect(f"/ws/exp?token={token}"))
    closed = await again.closed()
    assert closed.code == 4401 and "expired" in closed.reason


async def test_31st_socket_is_refused_4429(dapi, dclient, node_token):
    await create_server(dapi, "many")
    consoles = [await connect(dclient, "many", node_token, greet=False) for _ in range(30)]
    extra = Console(await dclient.ws_connect(f"/ws/many?token={node_token}"))
    assert (await extra.closed()).code == 4429
    await consoles.pop().close()
    await wait_for(lambda: dclient.app[keys.CONSOLE_SOCKETS].count("many") == 29)
    again = await connect(dclient, "many", node_token)
    await again.send("request_logs")
    assert (await again.until(lambda f: f["event"] == "logs"))["event"] == "logs"


async def test_oversized_frame_closes_1009_others_stay(dapi, dclient, node_token):
    await create_server(dapi, "big")
    victim = await connect(dclient, "big", node_token)
    bystander = await connect(dclient, "big", node_token)
    await victim.ws.send_str("x" * 64 * 1024)
    assert (await victim.closed()).code == 1009
    await bystander.send("request_logs")
    assert (await bystander.until(lambda f: f["event"] == "logs"))["event"] == "logs"


async def test_malformed_and_unknown_frames_get_error_and_socket_stays(dapi, dclient, node_token):
    await create_server(dapi, "junk")
    console = await connect(dclient, "junk", node_token)
    await console.ws.send_str("{not json")
    assert (await console.next())["data"]["message"] == "malformed JSON"
    await console.ws.send_json({"event": "launch_missiles"})
    assert "unknown event" in (await console.next())["data"]["message"]
    await console.ws.send_json({"what": 1})
    assert (await console.next())["event"] == "error"
    await console.ws.send_json([1, 2])
    assert (await console.next())["event"] == "error"
    await console.send("request_logs", {"lines": "many"})
    assert (await console.next())["event"] == "error"
    await console.ws.send_bytes(b"\x00\x01")
    assert (await console.next())["event"] == "error"
    await console.send("request_logs")
    assert (await console.next())["event"] == "logs"


async def test_inbound_rate_limit_drops_with_one_error(
    aiohttp_client, make_config, container_prefix, auth_headers, node_token
):
    client, api = await app_with(aiohttp_client, make_config, container_prefix, auth_headers,
                                 inbound_rate=1, inbound_burst=5)
    await create_server(api, "rate")
    console = await connect(client, "rate", node_token)
    for _ in range(20):
        await console.send("request_logs", {"lines": 1})
    await console.send("request_stats")
    await asyncio.sleep(0.5)
    frames = []
    try:
        while True:
            frames.append(await console.next(timeout=0.5))
    except TimeoutError:
        pass
    assert [f["event"] for f in frames].count("logs") == 5
    errors = [f["data"]["message"] for f in frames if f["event"] == "error"]
    assert len(errors) == 1 and "rate limited" in errors[0]
    await asyncio.sleep(1.1)
    await console.send("request_logs")
    assert (await console.next())["event"] == "logs"


async def test_deleting_the_container_closes_4404(dapi, dclient, node_token):
    await create_server(dapi, "gone")
    console = await connect(dclient, "gone", node_token)
    await console.send("power", "start")
    await console.event("running")
    status, body = await dapi.delete("/containers/gone")
    assert status == 200, body
    closed = await console.closed(timeout=40)
    assert closed.code == 4404
    assert "deleted" in [e["type"] for e in console.of("event")]


async def test_daemon_shutdown_closes_1001(dapi, dclient, node_token):
    await create_server(dapi, "bye")
    consoles = [await connect(dclient, "bye", node_token) for _ in range(2)]
    await dclient.server.close()
    for console in consoles:
        assert (await console.closed()).code == 1001


async def test_stats_frames_on_the_socket(dapi, dclient, node_token):
    await create_server(dapi, "wstats")
    console = await connect(dclient, "wstats", node_token)
    assert console.seen[0]["data"]["state"] == "offline" and console.seen[0]["data"]["memory_bytes"] == 0
    await console.send("power", "start")
    frame = await console.until(lambda f: f["event"] == "stats" and f["data"]["memory_bytes"] > 0, timeout=20)
    assert frame["data"]["state"] == "running"
    assert set(frame["data"]) == {"state", "cpu_absolute", "memory_bytes", "memory_limit_bytes", "network",
                                  "disk_bytes", "disk_limit_bytes", "uptime"}
    await console.send("power", "kill")
    final = await console.until(lambda f: f["event"] == "stats" and f["data"]["state"] == "offline", timeout=20)
    assert final["data"]["memory_bytes"] == 0 and final["data"]["uptime"] == 0



async def test_batch_mode_sends_queued_lines_as_one_frame(aiohttp_client, make_config, container_prefix,
                                                          auth_headers, node_token):
    """`?batch=1`: console lines come as `console_batch` frames, in order, none lost; events stay frames."""
    dclient, dapi = await app_with(aiohttp_client, make_config, container_prefix, auth_headers,
                                   throttle_lines=0, send_queue=10_000)
    await create_server(dapi, "batched", startup_command="sleep 1; seq 1 5000; echo END; sleep 1000")
    ws = await dclient.ws_connect(f"/ws/batched?token={node_token}&batch=1")
    console = Console(ws)
    assert [(await console.next())["event"] for _ in range(2)] == ["stats", "logs"]
    await dapi.post("/containers/batched/start")
    lines: list[str] = []

    async def read_all() -> None:
        while "END" not in lines:
            received = await console.next()
            if received["event"] == "console_batch":
                lines.extend(received["data"]["lines"])
            assert received["event"] != "console"

    await asyncio.wait_for(read_all(), 30)
    assert lines == [str(i) for i in range(1, 5001)] + ["END"]
    batches = [f for f in console.seen if f["event"] == "console_batch"]
    assert len(batches) < 5001  # several lines per frame
    assert any(f["event"] == "event" and f["data"]["type"] == "starting" for f in console.seen)
    await ws.close()


async def test_long_lines_and_unicode_reach_a_real_client_intact(dapi, dclient, node_token):
    """Frames of every length encoding (7-bit, 16-bit, 64-bit) written by the daemon's own frame writer,
    read by aiohttp's client: a 70000-byte line is cut at line_max_bytes (64 KiB) into two lines."""
    script = ("sleep 1; printf 'short\\n'; head -c 300 /dev/zero | tr '\\0' m; echo; "
              "head -c 70000 /dev/zero | tr '\\0' L; echo; printf '\\303\\251t\\303\\251 \\342\\202\\254 \"q\"\\n'; "
              "echo END; sleep 1000")
    await create_server(dapi, "long", startup_command=script)
    console = await connect(dclient, "long", node_token)
    await dapi.post("/containers/long/start")
    await console.console_line("END")
    assert console.lines() == ["short", "m" * 300, "L" * 65536, "L" * (70000 - 65536), 'été € "q"', "END"]
