"""Start detection is linear-time: a tenant's start pattern and console output cannot stall the daemon."""

from __future__ import annotations

import asyncio
import time

import pytest

from lightd.servers.console import START_PATTERN_MAX_PROGRAM, StartPattern
from tests.servers.helpers import create_server, get, make_volume, wait_state

LONG_LINES = 40
# 40 lines of 65,000 'x' (under console.line_max_bytes, so each reaches the matcher whole), then the marker.
FLOOD = (
    "line=$(head -c 65000 /dev/zero | tr '\\0' x); i=0; "
    f"while [ $i -lt {LONG_LINES} ]; do echo \"$line\"; i=$((i+1)); done; "
    "echo 'Server started'; sleep 1000"
)


async def test_backtracking_pattern_on_long_lines_keeps_the_daemon_responsive(dapi, dclient):
    """The attack: `.*Server started` is quadratic per line under a backtracking engine (seconds per 65 KB
    line, the event loop held throughout). With RE2 the server reaches `running` and ping stays fast."""
    await create_server(dapi, "flood", startup_command=FLOOD, start_pattern=".*Server started")
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def pinger() -> None:
        # The gap between two answered pings includes any time the loop was held, even between requests.
        last = loop.time()
        for _ in range(2000):  # bounded: ~100 s at most
            status, _ = await dapi.get("/api/v1/public/ping")
            assert status == 200
            now = loop.time()
            gaps.append(now - last)
            last = now
            if gaps[-1] >= 1.0:
                return  # stalled: the test fails now, not after every long line was matched
            await asyncio.sleep(0.05)

    status, body = await dapi.post("/containers/flood/start")
    assert status == 202, body
    tasks = [asyncio.create_task(pinger()), asyncio.create_task(wait_state(dapi, "flood", "running", timeout=60))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert gaps and max(gaps) < 1.0, f"ping stalled {max(gaps):.2f} s"
        await tasks[1]  # running (or its timeout)
        status, body = await dapi.get("/containers/flood/logs", params={"lines": "1"})
        assert status == 200 and body["lines"] == ["Server started"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=10)
        # End the output stream before the fixtures remove the container: the engine does not finish
        # removing a container whose attached output nobody reads.
        await dapi.post("/containers/flood/kill")
    assert len(gaps) >= 2 and max(gaps) < 1.0


async def test_pattern_refused_at_create_and_reinstall(dapi):
    volume = await make_volume(dapi)
    for pattern in (r"(a)\1", "(?=Server) started", "(?<!not )ready", "(unclosed", "[ab]{900}c"):
        status, body = await dapi.post("/containers", json={
            "internal_id": "refused", "image": "lightd-test/busybox:latest", "volume_id": volume,
            "startup_command": "true", "start_pattern": pattern})
        assert status == 400, (pattern, body)
        assert body["code"] == "validation_failed" and body["error"].startswith("start_pattern"), body
    status, body = await dapi.get("/containers/refused")
    assert status == 404  # nothing recorded

    await create_server(dapi, "kept", volume_id=volume, start_pattern="ready")
    status, body = await dapi.post("/containers/kept/reinstall", json={"start_pattern": r"(\w+) \1"})
    assert status == 400 and body["code"] == "validation_failed" and "start_pattern" in body["error"], body
    assert (await get(dapi, "kept"))["start_pattern"] == "ready"


@pytest.mark.parametrize("pattern, char, suffix, short", [
    (r"(a+)+$", "a", "!", 26), (r"(a|aa)+$", "a", "!", 35), (r"(x+x+)+y", "x", "", 26),
])
def test_catastrophic_patterns_are_linear(pattern, char, suffix, short):
    matcher = StartPattern(pattern)
    # Python's backtracking `re` needs seconds for `short` characters (exponential in the length)...
    began = time.perf_counter()
    assert not matcher.search(char * short + suffix)
    assert time.perf_counter() - began < 0.5
    # ...and would never finish a console line's worth.
    began = time.perf_counter()
    for _ in range(10):
        assert not matcher.search(char * 65_000 + suffix)
    assert time.perf_counter() - began < 1.0


def test_substring_fast_path_and_regex_semantics():
    plain = StartPattern("For help, type")
    assert plain._regex is None  # no metacharacters: `in`, no regex engine at all
    assert plain.search("[12:00] Done (3.1s)! For help, type \"help\"")
    regex = StartPattern(r"^Done \(\d+\.\d+s\)!$")
    assert regex.search("\x1b[32mDone (3.1s)!\x1b[0m")  # ANSI colour codes are removed first
    assert not regex.search("Not Done (3.1s)!")
    assert StartPattern("(?i)server STARTED").search("Server started on 0.0.0.0")
    assert StartPattern("é.+ü").search("café für")


def test_too_complex_pattern_is_refused_with_a_reason():
    with pytest.raises(ValueError, match=f"at most {START_PATTERN_MAX_PROGRAM}"):
        StartPattern("a[ab]{900}c")
    with pytest.raises(ValueError, match="backreferences"):
        StartPattern(r"(a)\1")


async def test_first_match_yields_between_long_lines():
    """Matching a chunk of many long lines gives the loop back between lines."""
    matcher = StartPattern(r"(?:[ab]*a[ab]{18}){10}c")  # RE2's DFA thrashes on this: its slowest path
    lines = ["ab" * 30_000] * 20  # no "c": no line matches, every line is searched whole
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(100_000):
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    ticks = 0
    index = await matcher.first_match(lines)
    task.cancel()
    assert index == -1
    assert ticks >= 5
