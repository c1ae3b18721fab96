"""A server's two states — runtime (is its process up) and install (can it run) — and the one table of
moves between them. Every change goes through `ServerStates.move`, which refuses a move the table does
not list; the checks a request makes before it begins an action are here too.

    runtime:  offline -> starting -> running -> stopping -> offline   (any -> offline: the process ended)
              starting | running <-> paused (frozen by the engine); paused -> stopping (a stop thaws it first)
              offline -> restoring -> offline (a backup is restored into the volume; power actions are refused)
              offline -> transferring -> offline (the volume is sent to another node; power actions are refused)
    install:  installing -> ready | failed;  ready | failed -> installing (reinstall)
"""

from __future__ import annotations

from lightd.errors import Conflict, LightdError, ServerInstalling, ServerRestoring, ServerTransferring

OFFLINE, STARTING, RUNNING, STOPPING, PAUSED = "offline", "starting", "running", "stopping", "paused"
RESTORING = "restoring"
"""A backup is being restored into the offline server's volume (lightd/backups); only a live daemon holds
it: the backups' recovery at start moves a stored one back to offline."""
TRANSFERRING = "transferring"
"""The stopped server's volume is being sent to another node (lightd/transfers); only a live daemon holds it:
the transfers' recovery at start moves a stored one back to offline."""
RUN_STATES = frozenset({OFFLINE, STARTING, RUNNING, STOPPING, PAUSED, RESTORING, TRANSFERRING})
ACTIVE_STATES = frozenset({STARTING, RUNNING, STOPPING, PAUSED})
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
    (STARTING, PAUSED): "a pause (lightd's or the engine's `docker pause`) froze the process",
    (RUNNING, PAUSED): "a pause (lightd's or the engine's `docker pause`) froze the process",
    (OFFLINE, PAUSED): "the container was found paused (daemon restart, engine back)",
    (STOPPING, PAUSED): "a stop of a paused server failed before it thawed it, or it was found paused",
    (PAUSED, STARTING): "an unpause of a server paused before its start pattern matched",
    (PAUSED, RUNNING): "an unpause (lightd's or the engine's `docker unpause`)",
    (PAUSED, STOPPING): "a stop or restart (the stop thaws the process first: a frozen one handles no signal)",
    (PAUSED, OFFLINE): "the process ended (a kill: the engine thaws a paused container to deliver it)",
    (OFFLINE, RESTORING): "a restore of a backup began (the server is offline and its power lock is held)",
    (RESTORING, OFFLINE): "the restore ended, well or not",
    (OFFLINE, TRANSFERRING): "a transfer to another node began (the server is stopped and its power lock is held)",
    (TRANSFERRING, OFFLINE): "the transfer failed or was cancelled (a completed one deletes the server instead)",
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
        # The engine holds the process frozen: from a move to `paused` until a thaw (`thawed`) or a move to
        # a state the process runs in. It outlives `paused -> stopping`: the stop must thaw it first.
        self.frozen = run == PAUSED
        self.resume_to = RUNNING  # what an unpause goes back to: the state the pause interrupted

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
            if new == PAUSED:
                self.frozen = True
                self.resume_to = current if current in (STARTING, RUNNING) else RUNNING
            elif new != STOPPING:
                self.frozen = False
            self.run = new
        return True

    def thawed(self) -> None:
        """The engine let the process run again (an unpause during a stop keeps the state `stopping`)."""
        self.frozen = False

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
        """The checks of a power action (start, stop, restart, kill, pause, unpause) before it begins."""
        if self.run == RESTORING:
            raise ServerRestoring(f"server {self.server} is restoring a backup")
        if self.run == TRANSFERRING:
            raise ServerTransferring(f"server {self.server} is being transferred to another node")
        if action == "start":
            self.check_can_start()
        elif action == "restart":
            self.check_ready()
        elif action == "pause" and self.run not in (STARTING, RUNNING):
            raise Conflict(f"server {self.server} is {'already paused' if self.run == PAUSED else self.run}")
        elif action == "unpause" and self.run != PAUSED:
            raise Conflict(f"server {self.server} is not paused")
        elif self.run == OFFLINE:
            raise Conflict(f"server {self.server} is not running")
