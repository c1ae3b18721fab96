"""What happens to a server's backups, as server events (they ride the bus like every `ServerEvent`: the
console socket sends their `wire`, remote sync turns them into panel updates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightd.servers.events import ServerEvent


@dataclass(frozen=True, slots=True)
class BackupEvent(ServerEvent):
    """Base of the backup and restore events: every one names its backup."""

    backup_id: str


@dataclass(frozen=True, slots=True)
class BackupStarted(BackupEvent):
    TYPE: ClassVar[str] = "backup_started"
    adapter: str


@dataclass(frozen=True, slots=True)
class BackupProgress(BackupEvent):
    """How far the archive is (percent of the bytes to read), at most every `PROGRESS_SECONDS`."""

    TYPE: ClassVar[str] = "backup_progress"
    percent: int


@dataclass(frozen=True, slots=True)
class BackupCompleted(BackupEvent):
    TYPE: ClassVar[str] = "backup_completed"
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BackupFailed(BackupEvent):
    TYPE: ClassVar[str] = "backup_failed"
    error: str


@dataclass(frozen=True, slots=True)
class RestoreCompleted(BackupEvent):
    TYPE: ClassVar[str] = "restore_completed"


@dataclass(frozen=True, slots=True)
class RestoreFailed(BackupEvent):
    """The restore failed or was cut by a daemon restart: the volume is as it was before it."""

    TYPE: ClassVar[str] = "restore_failed"
    error: str
