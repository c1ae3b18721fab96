"""BackupService: a server's backups (local or S3) — made in the background, listed, deleted, restored — and
what a daemon that died mid-backup or mid-restore left, settled at start.

Archives are written and extracted in worker threads (`archive.py`, `restore.py`); the loop publishes their
events and talks to S3. Every task is owned; a cancelled one (shutdown, server deleted) stops its thread
before it records the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lightd.backups import restore as restoring
from lightd.backups.archive import Interrupted, Result, Settings, read_ignore_file, write_archive
from lightd.backups.bridge import ChunkReader, PartWriter
from lightd.backups.events import (
    BackupCompleted, BackupFailed, BackupProgress, BackupStarted, RestoreCompleted, RestoreFailed,
)
from lightd.backups.local import LocalBackups
from lightd.backups.s3 import S3Backups
from lightd.backups.store import BackupStore
from lightd.backups.verify import HashingReader
from lightd.config import Config
from lightd.errors import BackupQuotaExceeded, Conflict, LightdError, NotFound
from lightd.events import EventBus
from lightd.servers.events import ServerEvent, StateChanged
from lightd.servers.state import OFFLINE, RESTORING
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.timestamps import rfc3339
from lightd.volumes.patterns import IgnoreRules
from lightd.volumes import swap as swapping
from lightd.volumes.sandbox import DIR_FLAGS

if TYPE_CHECKING:
    from lightd.servers.server import Server

log = logging.getLogger(__name__)
T = TypeVar("T")
INTERRUPTED = "interrupted by a daemon restart"


def backup_view(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of one backup."""
    return {
        "backup_id": row["id"], "container_id": row["server"], "name": row["name"], "adapter": row["adapter"],
        "compression": row["compression"], "status": row["status"], "size": row["size"], "sha256": row["sha256"],
        "files": row["files"], "skipped_count": row["skipped"], "error": row["error"], "ignore": row["ignore"],
        "created_at": rfc3339(row["created_at"]), "completed_at": rfc3339(row["completed_at"]),
        "restore_status": row["restore_status"], "restore_error": row["restore_error"],
        "restored_at": rfc3339(row["restored_at"]),
    }


class BackupService:
    """Every server's backups; `open()` settles what a dead daemon left, `close()` stops what runs."""

    def __init__(self, config: Config, store: Store, events: EventBus) -> None:
        self.config = config.backups
        self.volume_limits = config.volumes
        self.restore_limits = config.volumes.model_copy(update={
            "archive_max_entries": config.backups.restore_max_entries,
            "archive_max_total_bytes": config.backups.restore_max_bytes})
        self.root = config.backups_dir
        self.restores = self.root / ".restores"
        self.core = store
        self.store = BackupStore(lambda: store)
        self.events = events
        self.local = LocalBackups(self.root)
        self.s3 = S3Backups(config.backups.s3)
        self.tasks = TaskOwner("backups")
        self._jobs: dict[str, tuple[str, threading.Event]] = {}  # backup id -> (server, stop); one job each
        self._slots = asyncio.Semaphore(config.backups.max_running)

    # -- life cycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Make the backups folder (0700) and settle what a daemon that died left behind."""
        def make() -> None:
            self.restores.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # SECURITY: archives hold every tenant's files
        await asyncio.to_thread(make)
        await self._recover()

    async def close(self) -> None:
        """Stop every backup and restore (their threads too) and record them failed."""
        for _, stop in self._jobs.values():
            stop.set()
        await self.tasks.close(timeout=60)
        await self.s3.close()

    def _publish(self, server: str, event: ServerEvent) -> None:
        self.events.publish("event", server, event)

    # -- queries -------------------------------------------------------------------------------------
    async def list(self, server: str) -> list[dict[str, Any]]:
        """A server's backups, oldest first."""
        return [backup_view(row) for row in await self.store.of_server(server)]

    async def _row(self, server: str, backup_id: str) -> dict[str, Any]:
        row = await self.store.get(server, backup_id)
        if row is None:
            raise NotFound(f"backup {backup_id} of {server} not found")
        return row

    async def get(self, server: str, backup_id: str) -> dict[str, Any]:
        """One backup."""
        return backup_view(await self._row(server, backup_id))

    # -- create --------------------------------------------------------------------------------------
    async def create(self, server: Server, adapter: str, ignore: list[str], name: str | None,
                     compression: str | None) -> dict[str, Any]:
        """Record a backup and start writing it in the background (`backup_*` events tell how it goes)."""
        if adapter == "s3":
            self.s3.check_configured()
        IgnoreRules(ignore)  # 400 for a bad pattern now, not a failed backup later
        rows = await self.store.of_server(server.id)
        if len(rows) >= self.config.max_per_server:
            raise Conflict(f"server {server.id} has {len(rows)} backups (backups.max_per_server); delete one first")
        limit = self.config.max_local_bytes
        used = await self.store.local_bytes(server.id)
        if adapter == "local" and limit and used >= limit:
            raise BackupQuotaExceeded(f"server {server.id} keeps {used} bytes of local backups (backups.max_local_bytes)")
        backup_id = str(uuid.uuid4())
        compression = compression or self.config.compression
        name = name or time.strftime("backup-%Y%m%d-%H%M%S", time.gmtime())
        await self.store.insert(backup_id, server.id, name, adapter, compression, ignore)
        row = await self._row(server.id, backup_id)
        settings = Settings(compression, self.config.zstd_level, self.config.zstd_threads,
                            self.config.write_limit_mib_s * 1024 * 1024, self.volume_limits.max_depth,
                            limit - used if adapter == "local" and limit else None)
        stop = threading.Event()
        self._jobs[backup_id] = (server.id, stop)
        self.tasks.spawn(self._run_backup(server, row, settings, stop), name=f"backup:{backup_id}")
        return backup_view(row)

    async def _run_backup(self, server: Server, row: dict[str, Any], settings: Settings, stop: threading.Event) -> None:
        backup_id = row["id"]
        try:
            async with self._slots:
                self._publish(server.id, BackupStarted(backup_id, row["adapter"]))
                result = await self._write(server, row, settings, stop)
        except BaseException as exc:
            await self._failed(server.id, backup_id, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            await self.store.update(backup_id, status="completed", size=result.size, sha256=result.sha256,
                                    files=result.files, skipped=result.skips.count, completed_at=time.time())
            self._publish(server.id, BackupCompleted(backup_id, result.size, result.sha256))
        finally:
            self._jobs.pop(backup_id, None)

    async def _failed(self, server: str, backup_id: str, exc: BaseException) -> None:
        message = _describe(exc, "backup")
        await self.store.update(backup_id, status="failed", error=message, completed_at=time.time())
        self._publish(server, BackupFailed(backup_id, message))

    async def _write(self, server: Server, row: dict[str, Any], settings: Settings, stop: threading.Event) -> Result:
        loop = asyncio.get_running_loop()
        backup_id = row["id"]

        def report(percent: int) -> None:
            loop.call_soon_threadsafe(self._publish, server.id, BackupProgress(backup_id, percent))

        def archive(sink: Any) -> Result:
            root_fd = os.open(server.volume_path, DIR_FLAGS)
            try:
                rules = IgnoreRules(row["ignore"] + read_ignore_file(root_fd))
                return write_archive(root_fd, rules, sink, settings, stop, report)
            finally:
                os.close(root_fd)

        if row["adapter"] == "local":
            def to_file() -> Result:
                sink = self.local.sink(server.id, backup_id, row["compression"])
                try:
                    result = archive(sink)
                    sink.commit()
                    return result
                except BaseException:
                    sink.abort()
                    raise
            return await self._in_thread(stop, to_file)
        return await self._to_s3(server.id, row, archive, stop)

    async def _to_s3(self, server: str, row: dict[str, Any], archive: Callable[[Any], Result],
                     stop: threading.Event) -> Result:
        writer = PartWriter(asyncio.get_running_loop(), self.s3.part_size, stop)

        async def started(upload_id: str) -> None:
            await self.store.update(row["id"], upload_id=upload_id)

        upload = self.tasks.spawn(self.s3.upload(self.s3.key(server, row["id"], row["compression"]), writer.parts(),
                                                 started), name=f"backup-upload:{row['id']}")
        upload.add_done_callback(lambda task: setattr(writer, "error", _task_error(task)))

        def to_parts() -> Result:
            result = archive(writer)
            writer.close()
            return result

        try:
            result = await self._in_thread(stop, to_parts)
            await upload
        except BaseException:
            stop.set()
            upload.cancel()
            await asyncio.wait([upload], timeout=30)
            raise
        return result

    async def _in_thread(self, stop: threading.Event, work: Callable[[], T]) -> T:
        """Run blocking work in a worker thread; when cancelled, stop it and wait for it to end first."""
        future = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([future], timeout=60)
            raise

    # -- delete --------------------------------------------------------------------------------------
    async def delete(self, server: str, backup_id: str) -> dict[str, Any]:
        """Delete a backup's archive and record (409 while it is written or restored)."""
        row = await self._row(server, backup_id)
        if backup_id in self._jobs:
            raise Conflict(f"backup {backup_id} is being written or restored")
        if row["adapter"] == "local":
            await self.local.delete(server, backup_id, row["compression"])
        elif row["status"] == "completed":
            await self.s3.delete(self.s3.key(server, backup_id, row["compression"]))
        await self.store.delete(backup_id)
        return backup_view(row)

    async def forget_server(self, server: str) -> None:
        """A deleted server: stop its backups and remove its local ones (S3 objects and their records stay,
        for the panel to restore elsewhere or delete)."""
        jobs = [stop for owner, stop in self._jobs.values() if owner == server]
        for stop in jobs:
            stop.set()
        deadline = time.monotonic() + 60
        while any(owner == server for owner, _ in self._jobs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # each job stops its thread and records itself failed
        await self.local.delete_server(server)
        for row in await self.store.of_server(server):
            if row["adapter"] == "local":
                await self.store.delete(row["id"])

    # -- restore -------------------------------------------------------------------------------------
    async def restore(self, server: Server, backup_id: str, truncate: bool) -> dict[str, Any]:
        """Restore a completed backup into the offline server's volume, in the background: the server is
        `restoring` (power actions refused) until `restore_completed` or `restore_failed`."""
        row = await self._row(server.id, backup_id)
        if row["status"] != "completed":
            raise Conflict(f"backup {backup_id} is {row['status']}, not completed")
        server.states.check_installed()
        if server.state != OFFLINE:
            raise Conflict(f"server {server.id} must be offline to restore a backup (it is {server.state})")
        if any(owner == server.id for owner, _ in self._jobs.values()):
            raise Conflict(f"server {server.id} has a backup or restore running")
        with server.lock.taken("restore"):
            await self.store.update(backup_id, restore_status="running", restore_error=None)
            await server.set_state(RESTORING)
            stop = threading.Event()
            self._jobs[backup_id] = (server.id, stop)
            self.tasks.spawn(self._run_restore(server, row, truncate, stop), name=f"restore:{backup_id}")
        return backup_view(await self._row(server.id, backup_id))

    async def _run_restore(self, server: Server, row: dict[str, Any], truncate: bool, stop: threading.Event) -> None:
        backup_id = row["id"]
        work = restoring.work_dir(self.restores, server.id, backup_id)
        error: BaseException | None = None
        try:
            async with self._slots:
                await self._restore_into(server, row, truncate, work, stop)
        except BaseException as exc:
            error = exc
        try:
            await asyncio.to_thread(swapping.remove_work, work)
        except OSError as exc:
            log.warning("%s: restore work folder not removed: %s", server.id, exc)
        await self._restore_ended(server.id, backup_id, error)
        await server.set_state(OFFLINE)
        server.lock.release()
        self._jobs.pop(backup_id, None)
        if isinstance(error, asyncio.CancelledError):
            raise error

    async def _restore_ended(self, server: str, backup_id: str, error: BaseException | None) -> None:
        message = None if error is None else _describe(error, "restore")
        await self.store.update(backup_id, restore_status="failed" if message else "completed", restore_error=message,
                                restored_at=time.time())
        self._publish(server, RestoreFailed(backup_id, message) if message else RestoreCompleted(backup_id))

    async def _restore_into(self, server: Server, row: dict[str, Any], truncate: bool, work: Any,
                            stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        chunks: AsyncIterator[bytes] | None = None
        if row["adapter"] == "s3":
            chunks, _ = await self.s3.download(self.s3.key(server.id, row["id"], row["compression"]))

        def work_in_thread() -> None:
            raw = (ChunkReader(loop, chunks, stop) if chunks is not None
                   else self.local.open(server.id, row["id"], row["compression"]))
            try:
                staged = restoring.prepare(work, server.volume_path, truncate, self.volume_limits.max_depth, stop)
                reader = HashingReader(raw)
                restoring.extract(restoring.open_plain(reader, row["compression"]), staged, self.restore_limits, stop)  # type: ignore[arg-type]
                reader.verify(row["sha256"])
                if stop.is_set():
                    raise Interrupted("cancelled")
                swapping.swap(work, server.volume_path)
            finally:
                if chunks is None:
                    raw.close()  # type: ignore[union-attr]

        try:
            await self._in_thread(stop, work_in_thread)
        finally:
            if chunks is not None:
                await chunks.aclose()  # type: ignore[attr-defined]

    # -- downloads -----------------------------------------------------------------------------------
    async def open_for_download(self, container_id: str, backup_id: str) -> tuple[AsyncIterator[bytes], int]:
        """A completed backup's archive as it is stored (bytes as they are read) and its size, for a
        download; the caller drains or closes (`aclose`) the iterator."""
        row = await self._row(container_id, backup_id)
        if row["status"] != "completed":
            raise Conflict(f"backup {backup_id} is {row['status']}, not completed")
        if row["adapter"] == "local":
            return await self.local.stream(container_id, backup_id, row["compression"])
        return await self.s3.download(self.s3.key(container_id, backup_id, row["compression"]))

    # -- recovery ------------------------------------------------------------------------------------
    async def _recover(self) -> None:
        """After a daemon died: backups it was writing are failed (temp files and S3 uploads dropped),
        interrupted restores are settled (the volume as it was or fully restored) and their servers
        offline again, and the local backups of servers deleted meanwhile are removed."""
        for row in await self.store.where("status = 'running'"):
            await self._failed(row["server"], row["id"], Interrupted(INTERRUPTED))
            if row["adapter"] == "s3" and row["upload_id"]:
                key = self.s3.key(row["server"], row["id"], row["compression"])
                self.tasks.spawn(self.s3.abort(key, row["upload_id"]), name=f"abort-upload:{row['id']}")
        await asyncio.to_thread(self.local.remove_partials)
        settled = {}
        for work in await asyncio.to_thread(lambda: sorted(self.restores.iterdir())):
            settled[work.name] = await asyncio.to_thread(swapping.recover, work)
        for row in await self.store.where("restore_status = 'running'"):
            done = settled.get(restoring.work_dir(self.restores, row["server"], row["id"]).name, False)
            await self._restore_ended(row["server"], row["id"], None if done else Interrupted(INTERRUPTED))
        servers = {record["internal_id"]: record for record in await self.core.list_containers()}
        for record in servers.values():
            if record.get("state") == RESTORING:
                await self.core.update_container(record["internal_id"], state=OFFLINE)
                self._publish(record["internal_id"], StateChanged(OFFLINE))
        for row in await self.store.where("adapter = 'local'"):
            if row["server"] not in servers:
                await self.local.delete(row["server"], row["id"], row["compression"])
                await self.store.delete(row["id"])


def _task_error(task: asyncio.Task[Any]) -> BaseException | None:
    if task.cancelled():
        return Interrupted("the upload was cancelled")
    return task.exception()


def _describe(exc: BaseException, what: str) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return f"{what} cancelled (daemon shutdown or server deleted)"
    if isinstance(exc, LightdError):
        return exc.message
    log.error("%s failed", what, exc_info=exc)
    return f"{what} failed: internal error ({type(exc).__name__})"

