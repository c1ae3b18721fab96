"""PowerLock: one power action at a time per server. A busy lock is a 409, never a silent drop."""

from __future__ import annotations

from lightd.errors import PowerActionInProgress


class PowerLock:
    """Held for the whole of a start, stop, restart, reinstall or rebind. Kill does not take it.

    The event loop is single-threaded and `try_acquire` does not await, so a plain field is the lock.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.action: str | None = None

    def try_acquire(self, action: str) -> None:
        """Take the lock now or raise PowerActionInProgress naming the action in progress."""
        if self.action is not None:
            raise PowerActionInProgress(f"another power action ({self.action}) is in progress for {self.server}")
        self.action = action

    def release(self) -> None:
        self.action = None

    @property
    def locked(self) -> bool:
        return self.action is not None
