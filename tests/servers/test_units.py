"""Pure logic of the server domain: mounts, console lines, history, throttle, image names."""

from __future__ import annotations

import pytest

from lightd.servers.console import ConsoleHistory, LineSplitter, OutputThrottle, strip_ansi
from lightd.servers.manager import mount_allowed
from lightd.servers.models import validate_image


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
    assert [throttle.admit(now=10.0) for _ in range(5)] == [True, True, True, False, False]
    assert throttle.take_notice() is True
    assert throttle.take_notice() is False
    assert throttle.admit(now=10.2) is True  # a new window
    assert throttle.take_notice() is True
    assert OutputThrottle(0, 100).admit() is True  # disabled


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
