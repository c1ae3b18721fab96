"""Pure logic of the server domain: mounts, console lines, history, throttle, image names."""

from __future__ import annotations

import random

import pytest

from lightd.errors import PowerActionInProgress
from lightd.servers.console import ConsoleHistory, LineSplitter, OutputThrottle, strip_ansi
from lightd.servers.mounts import mount_allowed
from lightd.servers.models import validate_image
from lightd.servers.power import PowerLock


def test_mount_allowed_by_path_component():
    allowed = ["/srv/shared", "/data/games/"]
    assert mount_allowed("/srv/shared", allowed)
    assert mount_allowed("/srv/shared/maps", allowed)
    assert mount_allowed("/data/games/x", allowed)
    assert not mount_allowed("/srv/shared-secret", allowed)
    assert not mount_allowed("/srv", allowed)
    assert not mount_allowed("/etc", allowed)
    assert not mount_allowed("/anything", ["/"])  # the root is never an allowed mount base


def test_line_splitter_cr_lf_and_cut():
    splitter = LineSplitter(max_bytes=8)
    assert splitter.feed(b"a\r\nb\rc\n") == ["a", "b", "c"]
    assert splitter.feed(b"par") == []
    assert splitter.feed(b"tial\n") == ["partial"]
    assert splitter.feed(b"0123456789") == ["01234567"]
    assert splitter.flush() == ["89"]
    assert splitter.feed("é\n".encode()) == ["é"]


def test_history_bounded_by_lines_and_bytes():
    history = ConsoleHistory(max_lines=3, max_bytes=1_000)
    history.extend(["1", "2", "3", "4"])
    assert history.tail(10) == ["2", "3", "4"]
    assert history.tail(1) == ["4"]
    small = ConsoleHistory(max_lines=100, max_bytes=10)
    small.extend(["aaaa", "bbbb", "cccc"])
    assert small.tail(10) == ["bbbb", "cccc"]


def test_throttle_fixed_window_with_one_notice():
    throttle = OutputThrottle(lines_per_window=3, window_ms=100)
    assert [throttle.admit_many(1, now=10.0) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert throttle.take_notice() is True
    assert throttle.take_notice() is False
    assert throttle.admit_many(1, now=10.2) == 1  # a new window
    assert throttle.take_notice() is True
    assert OutputThrottle(0, 100).admit_many(1) == 1  # disabled


def test_strip_ansi():
    assert strip_ansi("\x1b[32mDone\x1b[0m (3s)") == "Done (3s)"


@pytest.mark.parametrize("image", ["busybox", "debian:12", "ghcr.io/pterodactyl/yolks:java_17", "127.0.0.1:5055/a/b:c",
                                   "localhost/x", "quay.io/org/img@sha256:" + "a" * 64])
def test_valid_images(image):
    assert validate_image(image) == image


@pytest.mark.parametrize("image", ["UPPER", "a b", "; rm -rf /", "../x", "x:", "-x", "a" * 300, "x:tag with space"])
def test_invalid_images(image):
    with pytest.raises(ValueError):
        validate_image(image)


def test_line_splitter_crlf_across_chunks_and_long_lines():
    splitter = LineSplitter(max_bytes=4)
    assert splitter.feed(b"ab\r") == ["ab"]
    assert splitter.feed(b"\ncd\n") == ["cd"]  # the LF belongs to the CR before it: no empty line
    assert splitter.feed(b"\r\r") == ["", ""]
    assert splitter.feed(b"0123456789ab") == ["0123", "4567", "89ab"]
    assert splitter.flush() == []


def reference_split(data: bytes, max_bytes: int) -> list[str]:
    """Line by line, the slow obvious way: CR, LF and CRLF end a line; long lines are cut at max_bytes."""
    text_lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    out: list[str] = []
    for raw in text_lines[:-1]:
        if not raw:
            out.append("")
        for i in range(0, len(raw), max_bytes):
            out.append(raw[i:i + max_bytes].decode("utf-8", "replace"))
    return out


def test_line_splitter_matches_line_by_line_decoding_on_random_chunks():
    rng = random.Random(20261124)
    alphabet = [b"a", b"Z", b" ", b"\n", b"\r", b"\r\n", "é".encode(), "€".encode(), b"\xe2\x82", b"\xff",
                b"\x1b[31m", b"\x00"]
    for _ in range(300):
        data = b"".join(rng.choice(alphabet) * rng.choice([1, 1, 1, 3, 40]) for _ in range(rng.randint(0, 200)))
        data += b"\n"
        splitter = LineSplitter(max_bytes=rng.choice([8, 16, 1024]))
        got: list[str] = []
        position = 0
        while position < len(data):
            step = rng.randint(1, 64)
            got.extend(splitter.feed(data[position:position + step]))
            position += step
        got.extend(splitter.flush())
        # Cuts of long lines fall where the chunks put them, so compare the text, not the cut points,
        # when a line was cut; otherwise the lines must be identical.
        expected = reference_split(data, splitter.max_bytes)
        if all(len(line.encode()) < splitter.max_bytes for line in expected):
            assert got == expected, data
        else:
            assert "".join(got) == "".join(expected), data


def test_throttle_admits_the_first_lines_of_a_chunk_that_fit():
    throttle = OutputThrottle(lines_per_window=5, window_ms=100)
    assert throttle.admit_many(3, now=10.0) == 3
    assert throttle.admit_many(3, now=10.01) == 2
    assert throttle.take_notice() and not throttle.take_notice()
    assert throttle.admit_many(4, now=10.05) == 0
    assert throttle.admit_many(7, now=10.11) == 5  # a new window
    assert throttle.take_notice()
    assert OutputThrottle(lines_per_window=0, window_ms=100).admit_many(10_000) == 10_000


def test_history_extend_keeps_the_byte_bound_with_big_chunks():
    history = ConsoleHistory(max_lines=1000, max_bytes=100)
    history.extend(["x" * 30] * 10)
    assert history.tail(1000) == ["x" * 30] * 3
    history.extend(["y" * 500])  # one line over the byte bound stays (the newest line is always kept)
    assert history.tail(1000) == ["y" * 500]


def test_a_stored_spec_that_breaks_a_newer_rule_loses_that_field_not_the_daemon():
    from lightd.servers.models import load_stored_spec

    raw = {"internal_id": "old", "image": "busybox:1", "volume_id": "v", "startup_command": "run",
           "start_pattern": "(?=lookahead)x", "mount": [{"source": "/srv/a", "target": "/proc"}]}
    spec, dropped = load_stored_spec(raw)
    assert dropped == ["mount", "start_pattern"]
    assert spec.start_pattern is None and spec.mount == [] and spec.startup_command == "run"
    good = {**raw, "start_pattern": "Done", "mount": []}
    assert load_stored_spec(good)[1] == []


def test_the_install_error_tail_is_bounded_in_characters():
    from lightd.servers.install_log import TAIL_MAX_CHARS, InstallLog

    log = InstallLog.__new__(InstallLog)
    log.lines = ["x" * 60_000 for _ in range(50)]
    tail = InstallLog.tail(log)
    assert len(tail) <= TAIL_MAX_CHARS + 1 and tail.endswith("x")


def test_a_power_lock_taken_for_a_setup_that_fails_is_released():
    lock = PowerLock("s")
    with pytest.raises(ValueError), lock.taken("reinstall"):
        assert lock.action == "reinstall"
        raise ValueError("setup failed")
    assert not lock.locked
    with lock.taken("rebind"):
        pass
    assert lock.action == "rebind"  # handed on: the task that runs the action releases it
    with pytest.raises(PowerActionInProgress, match="rebind"), lock.taken("start"):
        pass
    assert lock.action == "rebind"


async def test_power_lock_wait_free_waits_for_the_action_in_progress_and_takes_nothing():
    import asyncio

    from lightd.errors import PowerActionInProgress
    from lightd.servers.power import PowerLock

    lock = PowerLock("srv")
    lock.try_acquire("start")
    await lock.wait_free(0.05)  # gives up: still held
    with pytest.raises(PowerActionInProgress):
        lock.try_acquire("patch")
    asyncio.get_running_loop().call_later(0.05, lock.release)
    await lock.wait_free(5)
    assert not lock.locked  # free, and not taken by the wait
    lock.try_acquire("patch")
    lock.release()
    await lock.wait_free(0)  # free: returns at once
