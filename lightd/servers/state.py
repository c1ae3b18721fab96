"""A server's two states — runtime (is its process up) and install (can it run) — and the one table of
moves between them. Every change goes through `ServerStates.move`, which refuses a move the table does
not list; the checks a request makes before it begins an action are here too.

    runtime:  offline -> starting -> running -> stopping -> offline   (any -> offline: the process ended)
    install:  installing -> ready | failed;  ready | failed -> installing (reinstall)
"""

from __future__ import annotations

from lightd.errors import Conflict, LightdError, ServerInstalling

OFFLINE, STARTING, RUNNING, STOPPING = "offline", "starting", "running", "stopping"
RUN_STATES = frozenset({OFFLINE, STARTING, RUNNING, STOPPING})
ACTIVE_STATES = frozenset({STARTING, RUNNING, STOPPING})
"""A process is up (it has stats, it can be stopped)."""
ACCEPTS_COMMANDS = frozenset({STARTING, RUNNING})

INSTALLING, READY, FAILED = "installing", "ready", "failed"
INSTALL_STATES = frozenset({INSTALLING, READY, FAILED})

TRANSITIONS: dict[tuple[str, str], str] = {
    # runtime state: (from, to) -> what makes that move
    (OFFLINE, STARTING): "a start attached to the console and is starting the container",
    (OFFLINE, RUNNING): "the container was found running (daemon restart, engine back)",
    (STARTING, RUNNING): "a line matched the start pattern (or there is no pattern)",
    (STARTING, STOPPING): "a stop, restart or the typed stop command",
    (STARTING, OFFLINE): "the process ended",
    (RUNNING, STOPPING): "a stop, restart or the typed stop command",
    (RUNNING, OFFLINE): "the process ended",
    (STOPPING, RUNNING): "the container was found running after the daemon went away mid-stop",
    (STOPPING, OFFLINE): "the process ended",
    # install state
    (INSTALLING, INSTALLING): "the install begins (after create or a reinstall marked it): announced",
    (INSTALLING, READY): "the install ended well",
    (INSTALLING, FAILED): "the install failed, was cancelled or was cut by a daemon restart",
    (READY, INSTALLING): "a reinstall was accepted",
    (FAILED, INSTALLING): "a reinstall was accepted",
}


class ServerStates:
    """One server's runtime and install state (as last announced and stored)."""

    def __init__(self, server: str, run: str = OFFLINE, install: str = INSTALLING) -> None:
        self.server = server
        self.run = run
        self.install = install

    def move(self, new: str) -> bool:
        """Take `new` (a runtime or an install state). False when it is the current state and the table has
        no such move (nothing to announce); a move the table does not list is a bug in lightd: refused,
        with a LightdError (500), the state unchanged."""
        install = new in INSTALL_STATES
        current = self.install if install else self.run
        if (current, new) not in TRANSITIONS:
            if new == current:
                return False
            raise LightdError(f"server {self.server}: no state transition from {current} to {new}")
        if install:
            self.install = new
        else:
            self.run = new
        return True

    # -- what a request may begin (409 otherwise) --------------------------------------------------------
    def check_installed(self) -> None:
        """Not (re)installing."""
        if self.install == INSTALLING:
            raise ServerInstalling(f"server {self.server} is installing")

    def check_ready(self) -> None:
        """Installed and its install succeeded."""
        self.check_installed()
        if self.install != READY:
            raise Conflict(f"server {self.server} is {self.install}, not ready")

    def check_can_start(self) -> None:
        self.check_ready()
        if self.run != OFFLINE:
            raise Conflict(f"server {self.server} is already {self.run}")

    def check_power(self, action: str) -> None:
        """The checks of a power action (start, stop, restart, kill) before it begins."""
        if action == "start":
            self.check_can_start()
        elif action == "restart":
            self.check_ready()
        elif self.run == OFFLINE:
            raise Conflict(f"server {self.server} is not running")
