"""What happens to a server's transfer, as server events (they ride the bus like every `ServerEvent`: the
console socket sends their `wire`, remote sync turns them into panel updates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightd.servers.events import ServerEvent


@dataclass(frozen=True, slots=True)
class TransferEvent(ServerEvent):
    """Base of the transfer events: every one names its transfer."""

    transfer_id: str


@dataclass(frozen=True, slots=True)
class TransferStarted(TransferEvent):
    TYPE: ClassVar[str] = "transfer_started"
    target_url: str


@dataclass(frozen=True, slots=True)
class TransferProgress(TransferEvent):
    """How far the stream is: percent of the volume's bytes read, and compressed bytes sent so far."""

    TYPE: ClassVar[str] = "transfer_progress"
    percent: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class TransferCompleted(TransferEvent):
    """On the source: the target holds the server (the source's copy is deleted next). On the target: the
    server arrived, ready and not started."""

    TYPE: ClassVar[str] = "transfer_completed"
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class TransferFailed(TransferEvent):
    """The transfer failed or was cancelled: the server is on the source as it was before."""

    TYPE: ClassVar[str] = "transfer_failed"
    error: str
