"""The receiving node: checks an offer, extracts the stream into a work folder beside the volumes, verifies
its checksum, then creates the volume and the server in one step each (`VolumeService.adopt`: a rename;
`ServerManager.adopt`: its record, `ready`, not started). Any failure removes everything it made: a server
is here whole or not at all. A daemon that died mid-transfer leaves a work folder, removed at start.

The extraction is a backup restore's (`lightd/backups/restore.py`): the same header guards, entry and byte
caps, files through temp files, no link, device, absolute or `..` entry, no setuid/setgid/sticky bit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightd.backups import restore as extraction
from lightd.backups.archive import Interrupted
from lightd.backups.bridge import ChunkReader
from lightd.backups.verify import HashingReader
from lightd.config import Config
from lightd.errors import AlreadyExists, ArchiveRejected, Conflict, LightdError, NotFound, PortInUse
from lightd.events import EventBus
from lightd.ports import PortSpec
from lightd.servers.events import InstallStateChanged
from lightd.servers.install_log import FILE_NAME as INSTALL_LOG
from lightd.servers.limits import check_node_limits
from lightd.servers.models import ContainerSpec
from lightd.tasks import TaskOwner
from lightd.transfers.events import TransferCompleted
from lightd.transfers.protocol import FrameReader, Offer, cancellable
from lightd.transfers.store import TransferStore
from lightd.volumes import swap as swapping

if TYPE_CHECKING:
    from aiohttp import StreamReader

    from lightd.servers.environment import Environment
    from lightd.servers.manager import ServerManager

log = logging.getLogger(__name__)
STAGED = "staged"


@dataclass
class Incoming:
    """A transfer this node accepted: prepared, then receiving, then committing."""

    offer: Offer
    spec: ContainerSpec
    work: Path
    peer: str
    stop: threading.Event = field(default_factory=threading.Event)
    phase: str = "prepared"
    expiry: asyncio.Task[Any] | None = None

    @property
    def id(self) -> str:
        return self.offer.transfer_id


class TransferTarget:
    """Transfers this node receives, by transfer id."""

    def __init__(self, config: Config, store: TransferStore, events: EventBus,
                 servers: Callable[[], ServerManager], env: Callable[[], Environment]) -> None:
        self.config = config.transfers
        self.root = config.transfers_dir
        self.volumes_dir = config.volumes_dir
        self.limits = config.volumes.model_copy(update={"archive_max_entries": config.transfers.max_entries,
                                                        "archive_max_total_bytes": config.transfers.max_bytes})
        self.store = store
        self.events = events
        self._servers = servers
        self._env = env
        self.tasks = TaskOwner("transfers-in")
        self._incoming: dict[str, Incoming] = {}

    # -- life cycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Make the work folder (0700) and settle what a dead daemon left: every work folder is removed, a
        volume recorded for a server that was never created is deleted, and the transfer is `failed`."""
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(os.chmod, self.root, 0o700)  # SECURITY: work folders hold a tenant's files
        for work in await asyncio.to_thread(lambda: sorted(self.root.iterdir())):
            await asyncio.to_thread(swapping.remove_work, work)
        core = self.store.core
        for row in await self.store.running("in"):
            if await core.get_container(row["server"]) is not None:
                await self.store.end(row["id"], "completed")  # it died after the server was recorded
                continue
            if await core.get_volume(row["volume_id"]) is not None and not await core.containers_using_volume(row["volume_id"]):
                await core.delete_volume(row["volume_id"])
                await asyncio.to_thread(shutil.rmtree, self.volumes_dir / row["volume_id"], True)
            await self.store.end(row["id"], "failed", error="interrupted by a daemon restart")

    async def close(self) -> None:
        """Stop every transfer being received (each removes what it made)."""
        for incoming in list(self._incoming.values()):
            incoming.stop.set()
        await self.tasks.close(timeout=60)

    def list(self) -> list[dict[str, Any]]:
        """Transfers being received."""
        return [self._view(i) for i in self._incoming.values()]

    @staticmethod
    def _view(incoming: Incoming) -> dict[str, Any]:
        return {"transfer_id": incoming.id, "container_id": incoming.spec.internal_id, "status": incoming.phase,
                "peer": incoming.peer}

    # -- 1. the offer --------------------------------------------------------------------------------
    async def prepare(self, offer: Offer, spec: ContainerSpec, peer: str) -> dict[str, Any]:
        """Check this node can take the server (409 naming what it lacks; nothing is created) and reserve
        the transfer; the image is pulled now, so that the server can start once it is here."""
        if offer.transfer_id in self._incoming:
            raise AlreadyExists(f"transfer {offer.transfer_id} is already under way")
        if len(self._incoming) >= self.config.max_incoming:
            raise Conflict(f"this node already receives {len(self._incoming)} transfers (transfers.max_incoming)")
        servers = self._servers()
        if spec.internal_id in servers or any(i.spec.internal_id == spec.internal_id for i in self._incoming.values()):
            raise AlreadyExists(f"container {spec.internal_id} already exists on the target")
        if await servers.store.get_volume(spec.volume_id) is not None:
            raise AlreadyExists(f"volume {spec.volume_id} already exists on the target")
        check_node_limits(spec)
        await servers.mounts.check_async(spec.mount)
        lacking = await ports_lacking(servers, spec.ports)
        if lacking:
            raise PortInUse("the target cannot give the server its ports", details={"ports": lacking})
        await asyncio.to_thread(self._check_room, offer.volume_bytes)
        await servers.require_engine()
        incoming = Incoming(offer, spec, self.root / offer.transfer_id, peer)
        self._incoming[incoming.id] = incoming
        try:
            await self._env().ensure_image(spec.image, lambda record: None)
            await asyncio.to_thread(self._make_work, incoming.work)
            await self.store.insert(incoming.id, spec.internal_id, "in", peer, spec.volume_id)
        except BaseException:
            await self._forget(incoming)
            raise
        incoming.expiry = self.tasks.spawn(self._expire(incoming), name=f"transfer-expiry:{incoming.id}")
        return self._view(incoming)

    def _check_room(self, volume_bytes: int) -> None:
        free = shutil.disk_usage(self.root).free
        if free - volume_bytes < self.config.min_free_bytes:
            raise Conflict("not enough disk space on the target", details={
                "needed": volume_bytes, "free": free, "min_free_bytes": self.config.min_free_bytes})

    def _make_work(self, work: Path) -> None:
        work.mkdir(mode=0o700)
        (work / STAGED).mkdir(mode=0o700)
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        if os.stat(work).st_dev != os.stat(self.volumes_dir).st_dev:
            raise LightdError("data_dir/transfers is not on the volumes' file system: a transfer cannot be committed atomically")

    async def _expire(self, incoming: Incoming) -> None:
        """A prepared transfer whose stream never came is dropped after the idle timeout."""
        await asyncio.sleep(self.config.idle_timeout_seconds)
        if incoming.phase == "prepared" and self._incoming.get(incoming.id) is incoming:
            await self._end(incoming, "failed", "the stream did not arrive in time")

    # -- 2. the stream -------------------------------------------------------------------------------
    async def receive(self, transfer_id: str, content: StreamReader) -> dict[str, Any]:
        """Extract and verify the stream, then create the volume and the server; what was made is removed
        if anything fails."""
        incoming = self._incoming.get(transfer_id)
        if incoming is None:
            raise NotFound(f"transfer {transfer_id} is not prepared here (expired or cancelled)")
        if incoming.phase != "prepared":
            raise Conflict(f"transfer {transfer_id} is already {incoming.phase}")
        incoming.phase = "receiving"
        if incoming.expiry is not None:
            incoming.expiry.cancel()
        reader = FrameReader(content, self.config.max_bytes, self.config.idle_timeout_seconds)
        try:
            await self._extract(incoming, reader)
            incoming.phase = "committing"
            view = await self._commit(incoming)
        except BaseException as exc:
            status = "cancelled" if incoming.stop.is_set() else "failed"
            await self._end(incoming, status, _describe(exc))
            if isinstance(exc, Interrupted):
                raise Conflict(f"transfer {transfer_id} was cancelled on the target") from None
            raise
        sha256 = reader.end["sha256"] if reader.end else ""
        await self._end(incoming, "completed", None, bytes=reader.received, sha256=sha256)
        server = self._servers().find(incoming.spec.internal_id)
        if server is not None:
            server.publish(TransferCompleted(transfer_id, reader.received, sha256))
        return {"transfer_id": transfer_id, "container": view, "bytes": reader.received, "sha256": sha256}

    async def _extract(self, incoming: Incoming, reader: FrameReader) -> None:
        loop = asyncio.get_running_loop()
        stop = incoming.stop

        def work() -> None:
            raw = HashingReader(ChunkReader(loop, reader.chunks(), stop))  # type: ignore[arg-type]
            try:
                extraction.extract(extraction.open_plain(raw, "zstd"), incoming.work / STAGED, self.limits, stop)  # type: ignore[arg-type]
                raw.verify(None)  # what follows the archive, up to the end frame
            except ArchiveRejected:
                _drain(raw)  # a damaged stream: say so if the checksum is why
                _check_sum(raw, reader)
                raise
            _check_sum(raw, reader)
            if stop.is_set():
                raise Interrupted("cancelled")

        future = loop.run_in_executor(None, work)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([future], timeout=60)
            raise

    async def _commit(self, incoming: Incoming) -> dict[str, Any]:
        servers = self._servers()
        spec = incoming.spec
        await servers.volumes.adopt(spec.volume_id, incoming.work / STAGED)
        try:
            server = await servers.adopt(spec)
        except BaseException:
            await servers.volumes.delete(spec.volume_id)
            raise
        if incoming.offer.install_log:
            await asyncio.to_thread(_write_log, server.data_path, incoming.offer.install_log)
        server.publish(InstallStateChanged("ready"))
        return await servers.view(spec.internal_id)

    # -- 3. cancel and clean up ----------------------------------------------------------------------
    async def cancel(self, transfer_id: str) -> dict[str, Any]:
        """Cancel a transfer being received (409 once the server is being created)."""
        incoming = cancellable(self._incoming.get(transfer_id), f"transfer {transfer_id} is not under way here",
                               f"transfer {transfer_id} is creating the server: too late to cancel")
        incoming.stop.set()
        view = {**self._view(incoming), "status": "cancelled"}
        if incoming.phase == "prepared":
            await self._end(incoming, "cancelled", "cancelled on the target")
        return view

    async def _end(self, incoming: Incoming, status: str, error: str | None, **fields: Any) -> None:
        if self._incoming.get(incoming.id) is not incoming:
            return
        if status != "completed":
            log.info("incoming transfer %s of %s %s: %s", incoming.id, incoming.spec.internal_id, status, error)
        await self._forget(incoming)
        try:
            await self.store.end(incoming.id, status, error=error, **fields)
        except LightdError as exc:
            log.warning("transfer %s: outcome not recorded: %s", incoming.id, exc)

    async def _forget(self, incoming: Incoming) -> None:
        self._incoming.pop(incoming.id, None)
        if incoming.expiry is not None and incoming.expiry is not asyncio.current_task():
            incoming.expiry.cancel()
        if await asyncio.to_thread(incoming.work.exists):
            await asyncio.to_thread(swapping.remove_work, incoming.work)


async def ports_lacking(servers: ServerManager, specs: list[PortSpec]) -> list[dict[str, Any]]:
    """The ports of `specs` this node cannot give, each with why (not in the pool, held, lightd's own)."""
    lacking = []
    for spec in specs:
        rows = await servers.ports.store.list_ports(ip=spec.ip, port=spec.port, protocol=spec.protocol)
        reason = ("lightd's own listening port" if spec.port in servers.ports.own_ports
                  else "not in the port pool" if not rows
                  else f"in use by {rows[0]['container'] or 'something else'}" if rows[0]["in_use"] else None)
        if reason:
            lacking.append({**spec.model_dump(), "reason": reason})
    return lacking


def _drain(raw: HashingReader) -> None:
    try:
        while raw.read(1 << 20):
            pass
    except ArchiveRejected:
        raise
    except LightdError:
        pass  # the stream's own failure (a cut) is reported by the checksum check


def _check_sum(raw: HashingReader, reader: FrameReader) -> None:
    end = reader.end
    if end is None:
        raise ArchiveRejected("the stream ended before its end frame")
    if end["sha256"] != raw.hash.hexdigest() or end["bytes"] != reader.received:
        raise ArchiveRejected("checksum mismatch: the stream was damaged on its way (sha256 differs)")


def _write_log(data_path: Path, text: str) -> None:
    data_path.mkdir(parents=True, exist_ok=True)
    (data_path / INSTALL_LOG).write_text(text, encoding="utf-8")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled (daemon shutdown)"
    if isinstance(exc, Interrupted):
        return "cancelled on the target"
    if isinstance(exc, LightdError):
        return exc.message
    if isinstance(exc, OSError):
        return f"the target could not write the server's files: {exc.strerror or exc}"
    log.error("incoming transfer failed", exc_info=exc)
    return f"internal error ({type(exc).__name__})"
