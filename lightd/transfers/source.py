"""The sending node: stops the server (gracefully, then killed after `transfers.stop_timeout_seconds`), holds
it `transferring` (power actions and lightd's writes to its volume refused), offers it to the target, then
streams its volume as tar + zstd with a running sha256 (the backups' archive writer, `backups/archive.py`,
over the sandboxed walk). The target's 201 ends it: the source deletes its copy. Anything else — the target
refusing, the connection cut, a checksum the target finds wrong, a cancel — puts the server back as it was
(offline, and started again if it was running) and reports `transfer_failed` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from lightd.backups.archive import Interrupted, Result, Settings, planned_bytes, write_archive
from lightd.backups.bridge import PartWriter
from lightd.config import Config
from lightd.errors import Conflict, LightdError, NotFound, NotMovable, ServerRestoring, ServerTransferring
from lightd.events import EventBus
from lightd.servers.events import ServerEvent, StateChanged
from lightd.servers.install_log import FILE_NAME as INSTALL_LOG, read_log_file
from lightd.servers.power import stop_server
from lightd.servers.state import OFFLINE, RESTORING, TRANSFERRING
from lightd.servers.volume_mounts import volumes_of
from lightd.tasks import TaskOwner
from lightd.timestamps import rfc3339
from lightd.transfers.events import TransferCompleted, TransferFailed, TransferProgress, TransferStarted
from lightd.transfers.protocol import Offer, TransferCut, cancellable, data_header, end_frame
from lightd.transfers.store import TransferStore
from lightd.volumes.patterns import IgnoreRules
from lightd.volumes.sandbox import DIR_FLAGS

if TYPE_CHECKING:
    from lightd.servers.manager import ServerManager
    from lightd.servers.server import Server

log = logging.getLogger(__name__)
PART_BYTES = 1024 * 1024
ZSTD_JOB_BYTES = 2 * 1024 * 1024  # compressed output flows every few MiB read (progress, idle watch)
VENDOR = "Application/vnd.pkglatv1+json"
INTERRUPTED = "interrupted by a daemon restart"


@dataclass
class Outgoing:
    """A transfer this node runs: stopping the server, sending its volume, or waiting for the target."""

    id: str
    server: Server
    target_url: str
    token: str
    was_running: bool
    created_at: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)
    phase: str = "stopping"
    percent: int = 0
    bytes_sent: int = 0
    moved_at: float = field(default_factory=time.monotonic)
    offered: bool = False
    cancelled: bool = False
    sending: asyncio.Task[Any] | None = None


class TransferSource:
    """Transfers of this node's servers to other nodes, one at a time per server."""

    def __init__(self, config: Config, store: TransferStore, events: EventBus, servers: Callable[[], ServerManager]) -> None:
        self.config = config.transfers
        self.max_depth = config.volumes.max_depth
        self.install_log_bytes = config.console.install_log_bytes
        self.store = store
        self.events = events
        self._servers = servers
        self.tasks = TaskOwner("transfers-out")
        self._running: dict[str, Outgoing] = {}  # by server id
        self._closing = False

    # -- life cycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """After a daemon died mid-transfer: the transfer is `failed` and its server offline again (its
        volume was never changed by a transfer)."""
        for row in await self.store.running("out"):
            await self.store.end(row["id"], "failed", error=INTERRUPTED)
            self._publish(row["server"], TransferFailed(row["id"], INTERRUPTED))
        core = self.store.core
        for record in await core.list_containers():
            if record.get("state") == TRANSFERRING:
                await core.update_container(record["internal_id"], state=OFFLINE)
                self._publish(record["internal_id"], StateChanged(OFFLINE))

    async def close(self) -> None:
        """Stop every transfer (each puts its server back and records itself failed)."""
        self._closing = True
        for out in list(self._running.values()):
            out.stop.set()
        await self.tasks.close(timeout=60)

    def _publish(self, server: str, event: ServerEvent) -> None:
        self.events.publish("event", server, event)

    # -- start, look, cancel -------------------------------------------------------------------------
    async def start(self, server_id: str, target_url: str, token: str) -> dict[str, Any]:
        """Begin moving a server to the node at `target_url` (202; `transfer_*` events follow)."""
        servers = self._servers()
        server = servers.get(server_id)
        if server_id in self._running:
            raise Conflict(f"a transfer of {server_id} is already running")
        server.states.check_ready()
        if server.state == RESTORING:
            raise ServerRestoring(f"server {server_id} is restoring a backup")
        if server.state == TRANSFERRING:
            raise ServerTransferring(f"server {server_id} is being transferred")
        self._check_movable(server, servers)
        with server.lock.taken("transfer"):
            out = Outgoing(uuid.uuid4().hex, server, target_url.rstrip("/"), token, server.state != OFFLINE)
            await self.store.insert(out.id, server_id, "out", out.target_url, server.spec.volume_id)
            self._running[server_id] = out
            self.tasks.spawn(self._run(out), name=f"transfer:{out.id}")
        return self._live_view(out)

    @staticmethod
    def _check_movable(server: Server, servers: ServerManager) -> None:
        """Only the server's own volume moves: refuse (409 not_movable) a server that mounts other volumes
        (its spec would name volumes the target lacks: it could not start there) and one whose volume
        another server uses, as its own or mounted (that server would lose its data)."""
        mounted = [m.volume_id for m in server.spec.volume_mounts]
        if mounted:
            raise NotMovable(f"server {server.id} mounts other volumes ({', '.join(mounted)}), which do not move "
                             "with it: detach them first (PATCH volume_mounts)", details={"volume_mounts": mounted})
        sharing = [s.id for s in servers if s.id != server.id and server.spec.volume_id in volumes_of(s.spec)]
        if sharing:
            raise NotMovable(f"volume {server.spec.volume_id} is used by {', '.join(sharing)} too: it cannot move",
                             details={"containers": sharing})

    async def view(self, server_id: str) -> dict[str, Any]:
        """The server's transfer running now, or its last one."""
        out = self._running.get(server_id)
        if out is not None:
            return self._live_view(out)
        row = await self.store.latest_out(server_id)
        if row is None:
            raise NotFound(f"container {server_id} has no transfer")
        return {"transfer_id": row["id"], "container_id": row["server"], "target_url": row["peer"],
                "status": row["status"], "phase": None, "percent": 100 if row["status"] == "completed" else None,
                "bytes_sent": row["bytes"], "sha256": row["sha256"], "error": row["error"],
                "created_at": rfc3339(row["created_at"]), "ended_at": rfc3339(row["ended_at"])}

    def _live_view(self, out: Outgoing) -> dict[str, Any]:
        return {"transfer_id": out.id, "container_id": out.server.id, "target_url": out.target_url,
                "status": "running", "phase": out.phase, "percent": out.percent, "bytes_sent": out.bytes_sent,
                "sha256": None, "error": None, "created_at": rfc3339(out.created_at), "ended_at": None}

    async def cancel(self, server_id: str) -> dict[str, Any]:
        """Cancel the server's running transfer: it stays here as it was (409 once the target is creating it)."""
        out = cancellable(self._running.get(server_id), f"container {server_id} has no transfer running",
                          f"the target is creating {server_id}: too late to cancel")
        out.cancelled = True
        out.stop.set()
        if out.sending is not None:
            out.sending.cancel()
        return {**self._live_view(out), "status": "cancelled"}

    async def forget_server(self, server_id: str) -> None:
        """A server being deleted: its running transfer is cancelled (and has ended when this returns)."""
        out = self._running.get(server_id)
        if out is None:
            return
        out.cancelled = True
        out.stop.set()
        if out.sending is not None:
            out.sending.cancel()
        deadline = time.monotonic() + 60
        while server_id in self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- the transfer ----------------------------------------------------------------------------------
    async def _run(self, out: Outgoing) -> None:
        server = out.server
        try:
            self._publish(server.id, TransferStarted(out.id, out.target_url))
            await stop_server(server, self.config.stop_timeout_seconds)
            if out.cancelled or out.stop.is_set():
                raise Interrupted("cancelled")
            await server.set_state(TRANSFERRING)
            self._servers().volumes.freeze(server.spec.volume_id, "the server is being transferred to another node")
            out.phase = "sending"
            out.sending = self.tasks.spawn(self._send(out), name=f"transfer-send:{out.id}")
            answer = await out.sending
        except BaseException as exc:
            await self._failed(out, exc)
            if isinstance(exc, asyncio.CancelledError) and not out.cancelled:
                raise
        else:
            await self._completed(out, answer)

    async def _send(self, out: Outgoing) -> dict[str, Any]:
        server = out.server
        volume_bytes = await asyncio.to_thread(self._planned, out)
        install_log = await asyncio.to_thread(read_log_file, server.data_path / INSTALL_LOG, self.install_log_bytes, None)
        offer = Offer(transfer_id=out.id, spec=server.spec.model_dump(mode="json"), install_log=install_log,
                      volume_bytes=volume_bytes)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_seconds)
        headers = {"Authorization": f"Bearer {out.token}", "Accept": VENDOR}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            await _answer(session.post(out.target_url + "/transfers", json=offer.model_dump(mode="json"),
                                       timeout=aiohttp.ClientTimeout(total=self.config.prepare_timeout_seconds)), 201)
            out.offered = True
            return await self._stream(session, out)

    def _planned(self, out: Outgoing) -> int:
        fd = os.open(out.server.volume_path, DIR_FLAGS)
        try:
            return planned_bytes(fd, IgnoreRules([]), self.max_depth, out.stop)
        finally:
            os.close(fd)

    async def _stream(self, session: aiohttp.ClientSession, out: Outgoing) -> dict[str, Any]:
        """PUT the framed archive; watch that it moves; the target's answer once it has the server."""
        loop = asyncio.get_running_loop()
        writer = PartWriter(loop, PART_BYTES, out.stop)
        settings = Settings("zstd", self.config.zstd_level, self.config.zstd_threads,
                            self.config.rate_limit_mib_s * 1024 * 1024, self.max_depth, None,
                            zstd_job_bytes=ZSTD_JOB_BYTES)

        def report(percent: int) -> None:
            out.percent = percent
            loop.call_soon_threadsafe(self._publish, out.server.id, TransferProgress(out.id, percent, out.bytes_sent))

        def archive() -> Result:
            fd = os.open(out.server.volume_path, DIR_FLAGS)
            try:
                result = write_archive(fd, IgnoreRules([]), writer, settings, out.stop, report)
            except BaseException:
                with contextlib.suppress(Exception):
                    writer.close()  # the consumer sees the end, then the error below
                raise
            finally:
                os.close(fd)
            writer.close()
            return result

        made = loop.run_in_executor(None, archive)

        async def frames() -> AsyncIterator[bytes]:
            async for part in writer.parts():
                yield data_header(len(part))
                yield part
                out.bytes_sent += len(part)
                out.moved_at = time.monotonic()
            result = await made
            yield end_frame(result.sha256, result.size)
            out.phase = "committing"
            out.percent = 100

        put = asyncio.ensure_future(_answer(session.put(
            f"{out.target_url}/transfers/{out.id}", data=frames(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_seconds,
                                          sock_read=self.config.commit_timeout_seconds)), 201))
        try:
            while not put.done():
                await asyncio.wait([put], timeout=1)
                if out.phase == "sending" and time.monotonic() - out.moved_at > self.config.idle_timeout_seconds:
                    raise TransferCut(f"the stream did not move for {self.config.idle_timeout_seconds:g}s")
            return put.result()
        except BaseException:
            out.stop.set()
            writer.error = Interrupted("the stream ended")
            put.cancel()
            await asyncio.wait([put, made], timeout=60)
            if made.done() and not made.cancelled() and isinstance(made.exception(), LightdError) \
                    and not isinstance(made.exception(), Interrupted):
                raise made.exception() from None  # type: ignore[misc] # the archive's own failure is the reason
            raise

    # -- endings -------------------------------------------------------------------------------------
    async def _completed(self, out: Outgoing, answer: dict[str, Any]) -> None:
        server = out.server
        servers = self._servers()
        sha256, size = answer.get("sha256", ""), int(answer.get("bytes") or 0)
        await self.store.end(out.id, "completed", bytes=size, sha256=sha256)
        self._publish(server.id, TransferCompleted(out.id, size, sha256))
        servers.volumes.thaw(server.spec.volume_id)
        self._running.pop(server.id, None)  # done: the delete below must not wait for it (forget_server)
        await server.set_state(OFFLINE)
        try:
            await servers.delete(server.id)
            if not server.spec.owned_volume:
                await servers.volumes.delete(server.spec.volume_id)
        except LightdError as exc:
            log.warning("%s: moved to %s, but the copy here was not removed: %s", server.id, out.target_url, exc)
            await self.store.end(out.id, "completed", bytes=size, sha256=sha256,
                                 error=f"the source's copy was not removed: {exc.message}")
        finally:
            server.lock.release()

    async def _failed(self, out: Outgoing, exc: BaseException) -> None:
        server = out.server
        reason = _describe(exc, out)
        log.warning("%s: transfer %s to %s failed: %s", server.id, out.id, out.target_url, reason)
        self._servers().volumes.thaw(server.spec.volume_id)
        try:
            if server.state == TRANSFERRING:
                await server.set_state(OFFLINE)
            await self.store.end(out.id, "cancelled" if out.cancelled else "failed", error=reason)
        finally:
            server.lock.release()
            self._running.pop(server.id, None)
        self._publish(server.id, TransferFailed(out.id, reason))
        if out.offered and not self._closing:
            self.tasks.spawn(self._tell_target(out), name=f"transfer-cancel:{out.id}")
        if out.was_running and not self._closing and not server.deleted:
            self.tasks.spawn(self._restart(server), name=f"transfer-restart:{server.id}")

    async def _tell_target(self, out: Outgoing) -> None:
        """Best effort: the target drops what it holds (it also does when the stream is cut or never comes)."""
        headers = {"Authorization": f"Bearer {out.token}", "Accept": VENDOR}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=headers) as session:
                async with session.delete(f"{out.target_url}/transfers/{out.id}"):
                    pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass

    async def _restart(self, server: Server) -> None:
        """A server that ran before the transfer runs again after it failed."""
        try:
            await self._servers().power(server.id, "start")
        except LightdError as exc:
            server.report_failure("start", exc)


async def _answer(request: Any, expected: int) -> dict[str, Any]:
    """The target's JSON answer; a LightdError saying why when it is not `expected` or never comes."""
    try:
        async with request as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            if resp.status == expected and isinstance(body, dict):
                return body
    except (aiohttp.ClientError, OSError) as exc:
        raise LightdError(f"the connection to the target failed: {exc or type(exc).__name__}") from None
    except TimeoutError:
        raise LightdError("the target did not answer in time") from None
    message = body.get("error") if isinstance(body, dict) else None
    details = body.get("details") if isinstance(body, dict) else None
    text = f"the target refused the transfer ({resp.status}): {message or 'no reason given'}"
    if isinstance(details, dict) and isinstance(details.get("ports"), list):
        text += "; ports it cannot give: " + ", ".join(
            f"{p.get('ip')}:{p.get('port')}/{p.get('protocol')} ({p.get('reason')})" for p in details["ports"][:32])
    raise LightdError(text, details=details)


def _describe(exc: BaseException, out: Outgoing) -> str:
    if out.cancelled:
        return "cancelled"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled (daemon shutdown)"
    if isinstance(exc, LightdError):
        return exc.message
    log.error("transfer %s failed", out.id, exc_info=exc)
    return f"internal error ({type(exc).__name__})"
