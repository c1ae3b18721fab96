"""What happens to a server, as frozen dataclasses: one class per kind of happening, matched by type.

A `ServerEvent` rides the bus as the `data` of an `Event` of kind "event". Its `wire` is the JSON shape
every outside reader gets (console socket `event` frames, compat update feeds): `{"type": ..., <fields>}`,
keys in that order — the shape these events had before they were classes, kept byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """Base of every server event."""

    TYPE: ClassVar[str] = ""

    @property
    def type(self) -> str:
        """The `type` on the wire."""
        return self.TYPE

    @property
    def details(self) -> dict[str, Any]:
        """The fields without `type` (e.g. a panel update's `data`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def wire(self) -> dict[str, Any]:
        """`{"type": ..., <each field>}`: the JSON shape outside readers get."""
        return {"type": self.type, **self.details}


@dataclass(frozen=True, slots=True)
class _StateIsType(ServerEvent):
    """An event whose type is the state it announces."""

    state: str

    @property
    def type(self) -> str:
        return self.state

    @property
    def wire(self) -> dict[str, Any]:
        return {"type": self.state}


@dataclass(frozen=True, slots=True)
class StateChanged(_StateIsType):
    """The runtime state moved (`offline`, `starting`, `running`, `stopping`); the state is the type."""


@dataclass(frozen=True, slots=True)
class InstallStateChanged(_StateIsType):
    """The install began (`installing`) or ended well (`ready`); the state is the type."""


@dataclass(frozen=True, slots=True)
class InstallFailed(ServerEvent):
    """The install ended in `failed`; `error` says why (with the tail of the install log)."""

    TYPE: ClassVar[str] = "failed"
    error: str | None


@dataclass(frozen=True, slots=True)
class InstallStep(ServerEvent):
    """One step of an install (`Started`, `CreatingContainer`, ..., `Ready`, or `Error` with `error`)."""

    TYPE: ClassVar[str] = "install_step"
    step: str
    error: str | None = None

    @property
    def wire(self) -> dict[str, Any]:
        if self.error is None:
            return {"type": self.TYPE, "step": self.step}
        return {"type": self.TYPE, "step": self.step, "error": self.error}


@dataclass(frozen=True, slots=True)
class PullProgress(ServerEvent):
    """One progress record of an image pull, as the engine reported it."""

    TYPE: ClassVar[str] = "pull_progress"
    image: str
    status: str
    id: str | None
    progress: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartTimedOut(ServerEvent):
    """No output line matched the start pattern within the start timeout (reported, not acted on)."""

    TYPE: ClassVar[str] = "start_timeout"
    seconds: float


@dataclass(frozen=True, slots=True)
class ServerExited(ServerEvent):
    """The container's process ended, asked for or not."""

    TYPE: ClassVar[str] = "exit"
    exit_code: int
    oom_killed: bool


@dataclass(frozen=True, slots=True)
class ServerCrashed(ServerEvent):
    """The process ended while starting or running and nobody asked it to (follows its `ServerExited`)."""

    TYPE: ClassVar[str] = "crashed"
    exit_code: int
    oom_killed: bool


@dataclass(frozen=True, slots=True)
class ConsoleDetached(ServerEvent):
    """The console stream ended because the engine went away; the server may still run."""

    TYPE: ClassVar[str] = "detached"


@dataclass(frozen=True, slots=True)
class ServerDeleted(ServerEvent):
    """The server and its container are gone (its console sockets close)."""

    TYPE: ClassVar[str] = "deleted"


@dataclass(frozen=True, slots=True)
class ActionFailed(ServerEvent):
    """An accepted action (start, stop, restart, kill, reinstall, rebind) failed: published once, by the
    action (`Server.report_failure`)."""

    TYPE: ClassVar[str] = "error"
    message: str
    action: str

    @property
    def wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "action": self.action, "message": self.message}


@dataclass(frozen=True, slots=True)
class NetworkRebound(ServerEvent):
    """The container was recreated on new ports (`ports`: each port's public shape)."""

    TYPE: ClassVar[str] = "network_rebound"
    ports: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SftpActivity(ServerEvent):
    """Something an SFTP session did (`login`, `upload`, `delete`, `rename`, `mkdir`, `rmdir`): who (`user`,
    the login's username), from where (`ip`) and on which volume paths (`paths`, at most two)."""

    TYPE: ClassVar[str] = "sftp_activity"
    action: str
    user: str
    ip: str
    paths: tuple[str, ...] = ()

    @property
    def wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "action": self.action, "user": self.user, "ip": self.ip, "paths": list(self.paths)}
