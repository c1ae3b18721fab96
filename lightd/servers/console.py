"""Console output: bytes to lines, the bounded history of a server, the output throttle, the lines on their
way out (`ConsoleOutput`), and the start pattern that tells a server is up (with its `StartTimeout`)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import re2

if TYPE_CHECKING:
    from lightd.events import EventBus
    from lightd.timers import Timer, TimerWheel

THROTTLE_NOTICE = "Server is outputting console data too quickly -- throttling..."

ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(line: str) -> str:
    return ANSI_ESCAPE.sub("", line)


class LineSplitter:
    """Turns a byte stream into text lines: LF, CR and CRLF end a line, a line is cut at `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._rest = b""
        self._after_cr = False  # the last chunk ended with CR: a LF opening the next one belongs to it

    def feed(self, chunk: bytes) -> list[str]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        data = self._rest + chunk
        if b"\r" in data:  # one pass over the chunk, not one search per line
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n")
        if end < 0:
            lines: list[str] = []
            self._rest = data
        else:
            self._rest = data[end + 1:]
            complete = data[:end]
            if len(complete) <= self.max_bytes or max(map(len, complete.split(b"\n"))) <= self.max_bytes:
                # One decode and one split for the whole chunk. LF never occurs inside a UTF-8 sequence,
                # so this is the same text (and the same replacement characters) as line by line.
                lines = complete.decode("utf-8", "replace").split("\n")
            else:
                lines = []
                for raw in complete.split(b"\n"):
                    lines.extend(self._decode(raw))
        if len(self._rest) >= self.max_bytes:
            cut = len(self._rest) - len(self._rest) % self.max_bytes
            lines.extend(self._decode(self._rest[:cut]))
            self._rest = self._rest[cut:]
        return lines

    def flush(self) -> list[str]:
        """What remains at end of stream (a last line without a newline)."""
        if not self._rest:
            return []
        raw, self._rest = self._rest, b""
        return self._decode(raw)

    def _decode(self, raw: bytes) -> list[str]:
        if len(raw) <= self.max_bytes:
            return [raw.decode("utf-8", "replace")]
        return [raw[i:i + self.max_bytes].decode("utf-8", "replace") for i in range(0, len(raw), self.max_bytes)]


class ConsoleHistory:
    """The last lines of a server's console, bounded by line count and by bytes (oldest dropped)."""

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._bytes = 0

    def extend(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        self._lines.extend(lines)
        self._bytes += sum(map(len, lines))
        excess = len(self._lines) - self.max_lines
        if excess > 0:
            popleft = self._lines.popleft
            self._bytes -= sum(len(popleft()) for _ in range(excess))
        while self._bytes > self.max_bytes and len(self._lines) > 1:
            self._bytes -= len(self._lines.popleft())

    def tail(self, count: int) -> list[str]:
        if count <= 0:
            return []
        if count >= len(self._lines):
            return list(self._lines)
        return list(self._lines)[-count:]

    def clear(self) -> None:
        self._lines.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._lines)


class OutputThrottle:
    """Fixed-window line budget (Wings: 2000 lines per 100 ms). `admit_many` says how many of a chunk's
    lines may be published; `take_notice` is True once per window in which lines were dropped."""

    def __init__(self, lines_per_window: int, window_ms: int) -> None:
        self.limit = lines_per_window
        self.window = window_ms / 1000.0
        self._window_start = 0.0
        self._count = 0
        self._noticed = False
        self.lines_total = 0
        self.dropped_total = 0
        """Lines read and lines the throttle dropped, over the daemon's life (GET /metrics)."""

    def reset(self) -> None:
        self._window_start = 0.0
        self._count = 0
        self._noticed = False

    def admit_many(self, count: int, now: float | None = None) -> int:
        """How many of the next `count` lines may be published (the first ones); the rest are dropped."""
        self.lines_total += count
        if self.limit <= 0:
            return count
        now = time.monotonic() if now is None else now
        if now - self._window_start >= self.window:
            self._window_start = now
            self._count = 0
            self._noticed = False
        admitted = min(count, max(self.limit - self._count, 0))
        self._count += count
        self.dropped_total += count - admitted
        return admitted

    def take_notice(self) -> bool:
        if self._noticed:
            return False
        self._noticed = True
        return True


# A pattern without any of these is a plain substring, found with `in`.
_REGEX_METACHARACTERS = frozenset(".^$*+?{}[]\\|()")
START_PATTERN_MAX_PROGRAM = 512
"""Largest RE2 program a start pattern may compile to. RE2 is linear in the line, but when its DFA cache
overflows it falls back to an NFA whose cost per byte grows with the program: at 512 instructions a
64 KiB line of adversarial output costs ~0.2 s, at the 1024-character limit it could cost several."""
_MATCH_BUDGET = 4_000_000
"""Work (bytes searched x program size) between two yields to the event loop while matching a chunk."""


class StartPattern:
    """How a server's console shows it has started: a plain substring, or a regular expression matched by
    RE2, in time linear in the line. Raises ValueError for what RE2 cannot take (backreferences,
    lookaround) or for a pattern too complex to bound."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._needle: str | None = None
        self._regex: re2._Regexp | None = None
        if _REGEX_METACHARACTERS.isdisjoint(pattern):
            self._needle = pattern
            self._cost = 1
            return
        # SECURITY: backtracking start pattern. The pattern is the tenant's and runs on every line its
        # server prints: Python's backtracking `re` spent seconds per 64 KiB line on ".*Server started",
        # with the event loop blocked. RE2 has no backtracking; captures are never needed here, and
        # without them RE2 runs a smaller program and skips the submatch pass.
        options = re2.Options()
        options.log_errors = False  # a refused pattern is the client's error, not something for stderr
        options.never_capture = True
        try:
            self._regex = re2.compile(pattern, options)
        except re2.error as exc:
            reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise ValueError(
                f"not a regular expression lightd can match in linear time ({reason}); RE2 syntax: no "
                "backreferences, lookahead or lookbehind, repetition counts up to 1000"
            ) from None
        size = self._regex.programsize
        if size > START_PATTERN_MAX_PROGRAM:
            raise ValueError(
                f"regular expression too complex: it compiles to {size} RE2 instructions, at most "
                f"{START_PATTERN_MAX_PROGRAM} (use smaller repetition counts)"
            )
        self._cost = size

    def search(self, line: str) -> bool:
        """Whether the line (ANSI escapes removed) shows the server has started."""
        text = strip_ansi(line)
        if self._needle is not None:
            return self._needle in text
        assert self._regex is not None
        # Bytes, not str: the str path of the re2 module maps every match offset back to characters.
        return self._regex.search(text.encode("utf-8", "replace")) is not None

    async def first_match(self, lines: Sequence[str]) -> int:
        """Index of the first line that matches, -1 if none. Yields to the event loop whenever the work
        done on this chunk passes a budget, so that a flood of long lines never holds the loop for more
        than one line's search."""
        work = 0
        for index, line in enumerate(lines):
            if self.search(line):
                return index
            work += (len(line) + 1) * self._cost
            if work >= _MATCH_BUDGET:
                work = 0
                await asyncio.sleep(0)
        return -1


class ConsoleOutput:
    """A server's output lines on their way to its sockets: the throttle admits the first lines of a chunk
    that fit its budget; those go to the history and out as one `console` event. When it cuts, `notice`
    tells the console (at most once per throttle window)."""

    def __init__(self, server_id: str, events: EventBus, history: ConsoleHistory, throttle: OutputThrottle,
                 notice: Callable[[str], None]) -> None:
        self.server_id = server_id
        self.events = events
        self.history = history
        self.throttle = throttle
        self.notice = notice

    def publish(self, lines: list[str]) -> None:
        if not lines:
            return
        total = len(lines)
        admitted = self.throttle.admit_many(total)
        if admitted:
            if admitted < total:
                lines = lines[:admitted]
            self.history.extend(lines)
            self.events.publish("console", self.server_id, lines)
        if admitted < total and self.throttle.take_notice():
            self.notice(THROTTLE_NOTICE)


class StartTimeout:
    """The one wheel timer (not a task) of a server's start: `fire` runs if the start is still unmatched after
    `seconds`. Re-armed by each start and cancelled when the start is over, so restarts leave nothing on the
    wheel."""

    def __init__(self, timers: TimerWheel, name: str) -> None:
        self.timers = timers
        self.name = name
        self._timer: Timer | None = None

    def arm(self, seconds: float, fire: Callable[[], None]) -> None:
        self.cancel()
        self._timer = self.timers.call_later(seconds, fire, name=self.name)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
