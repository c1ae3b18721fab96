"""Login rate limits and session counts of the SFTP server.

Policy (failed logins): every failed password is counted against the client's address and against the
username it tried, in fixed windows of `sftp.login_window_seconds`. A key that reached its maximum in the
current window (`login_failures_per_ip`, `login_failures_per_user`) is refused at once, without checking
the password, until that window ends; a successful login does not reset the count (so a guessed password
cannot hide among good ones). Memory is bounded: each table remembers at most `login_tracked_max` keys,
and when full it forgets the one whose last failure is oldest (an attacker spraying addresses or names
ages out older records; it gains nothing on the keys it sprays).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    failures: int


class FailureCounter:
    """Failures per key in fixed windows, for at most `tracked_max` keys (least recently failed forgotten)."""

    def __init__(self, max_failures: int, window: float, tracked_max: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.tracked_max = tracked_max
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def _current(self, key: str) -> _Window | None:
        entry = self._windows.get(key)
        if entry is not None and self._clock() - entry.started >= self.window:
            del self._windows[key]
            return None
        return entry

    def blocked(self, key: str) -> bool:
        """Whether `key` used up its failures in the current window."""
        entry = self._current(key)
        return entry is not None and entry.failures >= self.max_failures

    def fail(self, key: str) -> None:
        """Count one failure of `key`."""
        entry = self._current(key)
        if entry is None:
            entry = self._windows[key] = _Window(self._clock(), 0)
        self._windows.move_to_end(key)
        entry.failures += 1
        while len(self._windows) > self.tracked_max:
            self._windows.popitem(last=False)


class LoginLimiter:
    """Failed SFTP logins, per client address and per username (see the module's policy)."""

    def __init__(self, per_ip: int, per_user: int, window: float, tracked_max: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.by_ip = FailureCounter(per_ip, window, tracked_max, clock)
        self.by_user = FailureCounter(per_user, window, tracked_max, clock)

    def blocked(self, ip: str, username: str) -> bool:
        """True when the address or the username is over its limit: refuse without checking."""
        return self.by_ip.blocked(ip) or self.by_user.blocked(username.casefold())

    def failed(self, ip: str, username: str) -> None:
        self.by_ip.fail(ip)
        self.by_user.fail(username.casefold())


class SessionCounts:
    """Open SFTP sessions per login (a token, or a panel user on one server), at most `max_per_user`."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._counts: dict[str, int] = {}

    def acquire(self, user: str) -> bool:
        """Count one more session of `user`; False (nothing counted) when it already has the maximum."""
        count = self._counts.get(user, 0)
        if count >= self.max_per_user:
            return False
        self._counts[user] = count + 1
        return True

    def release(self, user: str) -> None:
        count = self._counts.get(user, 0) - 1
        if count > 0:
            self._counts[user] = count
        else:
            self._counts.pop(user, None)

    def count(self, user: str) -> int:
        return self._counts.get(user, 0)
