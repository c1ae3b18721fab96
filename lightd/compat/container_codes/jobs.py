"""Jobs: a command run to completion in a lightd container, recorded in the store.

A job is queued (`cc_jobs` row), claimed by the one runner of the daemon (shared by the mounted and the
own-port application through `CompatServices.shared`), and run as a lightd server named after the job:
a fresh volume receives the `input_files` (from the file area), the container runs the command, its exit
code decides `completed`/`failed`, the console tail is kept as the job's logs, files matching
`output_patterns` are listed, and the container is removed (its volume stays while it holds outputs).
Failures are retried up to `retry_policy.max_attempts` with the policy's backoff. At most `MAX_RUNNING`
jobs run at once, highest priority first, then oldest; queued jobs survive a daemon restart and run
after it, while a job that was running when the daemon stopped is recorded `failed` at the next start.

Status changes are published on the bus (kind `compat`, data a `JobStatusChanged`), which feeds
`/api/ws/updates`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lightd.compat.base import CompatServices
from lightd.compat.container_codes.filearea import FileArea, matching, walk_files, write_bytes
from lightd.compat.container_codes.models import PRIORITIES, JobCreate, command_line, iso
from lightd.compat.container_codes.store import ContainerCodesStore
from lightd.errors import Conflict, LightdError, NotFound
from lightd.servers.events import ServerExited
from lightd.servers.models import ContainerSpec
from lightd.tasks import TaskOwner

log = logging.getLogger(__name__)

BUS_KIND = "compat"
MAX_RUNNING = 4
POLL_SECONDS = 5.0
"""Queued jobs are also looked for this often (a missed wake-up costs at most this)."""
LOG_LINES = 1000
CANCEL_WAIT = 30.0
TERMINAL = frozenset({"completed", "failed", "cancelled"})
INTERRUPTED = "interrupted: the daemon stopped while the job was running"


@dataclass(frozen=True, slots=True)
class JobStatusChanged:
    """A job's status moved; `progress` is 0 when queued, 100 when done, else unknown (None)."""

    job_id: str
    status: str
    progress: float | None


def new_job_id() -> str:
    return f"job_{secrets.token_hex(8)}"


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """The seed's job status shape (plus attempts, exit code and error)."""
    status = row["status"]
    return {
        "job_id": row["id"],
        "name": row["name"],
        "status": status,
        "progress": 100.0 if status in TERMINAL else 0.0 if status == "queued" else None,
        "priority": row["request"].get("priority", "normal"),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "container_id": row["container"],
        "attempts": row["attempts"],
        "exit_code": row["exit_code"],
        "error": row["error"],
        "output_files": [f["path"] for f in row["output_files"]],
    }


class JobRunner:
    """Queues, runs, cancels and retries jobs; one per daemon."""

    def __init__(self, services: CompatServices, files: FileArea, store: ContainerCodesStore) -> None:
        self.services = services
        self.files = files
        self.store = store
        self.tasks = TaskOwner("container-codes-jobs")
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()

    @property
    def boot(self) -> float:
        return self.services.tokens.booted_at

    # -- lifetime: the front end's, after the daemon's services start and before they close ------------
    async def start(self) -> None:
        """Record the jobs a daemon stop interrupted as failed, then start the dispatcher."""
        await self._recover()
        self.tasks.spawn(self._dispatch(), name="dispatcher")

    async def close(self) -> None:
        """Stop the dispatcher and every running job."""
        # A running job's task is cancelled: it removes its container (best effort, within the close
        # timeout) and stays `running` in the store; the next start records it failed and removes
        # whatever was left. A job cannot outlive the daemon that watches its exit.
        await self.tasks.close(timeout=5.0)

    async def _recover(self) -> None:
        for row in await self.store.fail_interrupted_jobs(self.boot, INTERRUPTED):
            log.warning("container codes: job %s was interrupted by a daemon stop; recorded failed", row["id"])
            try:
                if row["container"] and row["container"] in self.services.servers:
                    await self.services.servers.delete(row["container"])
                if row["volume_id"]:  # an interrupted run lists no outputs: its volume goes too
                    with contextlib.suppress(NotFound):  # stopped before the volume was made
                        await self.services.volumes.delete(row["volume_id"])
                    await self.store.update_job(row["id"], volume_id=None)
            except LightdError as exc:
                log.warning("container codes: cleaning up interrupted job %s: %s", row["id"], exc)
            self._publish(row["id"], "failed")

    # -- requests ------------------------------------------------------------------------------------
    async def submit(self, request: JobCreate) -> dict[str, Any]:
        """Record a queued job and wake the dispatcher."""
        await self.services.resolve_image(request.image)  # an unknown image is a 400 now, not a failed job
        job_id = new_job_id()
        await self.store.insert_job(
            job_id, request.name, PRIORITIES[request.priority], request.model_dump(mode="json"), self.boot,
        )
        self._publish(job_id, "queued")
        self._wake.set()
        return await self.get(job_id)

    async def get(self, job_id: str) -> dict[str, Any]:
        row = await self.store.get_job(job_id)
        if row is None:
            raise NotFound(f"Job with ID '{job_id}' not found", details={"job_id": job_id})
        return row

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; 409 for a finished one."""
        row = await self.get(job_id)
        if row["status"] in TERMINAL:
            raise Conflict(f"job {job_id} is already {row['status']}", details={"job_id": job_id})
        if await self.store.cancel_queued_job(job_id):
            self._publish(job_id, "cancelled")
            return await self.get(job_id)
        task = self._running.get(job_id)
        if task is not None:
            self._cancelling.add(job_id)
            task.cancel()
            await asyncio.wait([task], timeout=CANCEL_WAIT)
        return await self.get(job_id)

    async def retry(self, job_id: str) -> dict[str, Any]:
        """Queue a failed or cancelled job again; 409 otherwise."""
        row = await self.get(job_id)
        if not await self.store.requeue_job(job_id):
            raise Conflict(f"only failed or cancelled jobs can be retried (job {job_id} is {row['status']})",
                           details={"job_id": job_id})
        self._publish(job_id, "queued")
        self._wake.set()
        return await self.get(job_id)

    def logs(self, row: dict[str, Any]) -> list[str]:
        """A running job's console tail, or the stored one."""
        container = row["container"]
        if row["status"] == "running" and container in self.services.servers:
            return self.services.servers.logs(container, LOG_LINES)
        return row["logs"]

    # -- dispatching ---------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            free = MAX_RUNNING - len(self._running)
            try:
                for job_id in await self.store.queued_jobs(free) if free > 0 else []:
                    if await self.store.claim_job(job_id, self.boot):
                        self._running[job_id] = self.tasks.spawn(self._run(job_id), name=f"job:{job_id}")
            except Exception:  # noqa: BLE001 - one failed round must not end the dispatcher
                log.exception("container codes: dispatching jobs failed; trying again in %.0fs", POLL_SECONDS)
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            except TimeoutError:
                pass

    async def _run(self, job_id: str) -> None:
        try:
            self._publish(job_id, "running")
            row = await self.get(job_id)
            request = JobCreate.model_validate(row["request"])
            attempt = row["attempts"]
            while True:
                status, fields = await self._attempt(job_id, request)
                if status == "completed" or attempt >= request.retry_policy.max_attempts:
                    break
                await asyncio.sleep(_backoff(request, attempt))
                attempt += 1
                await self.store.update_job(job_id, attempts=attempt, error=fields.get("error"))
            await self._finish(job_id, status, **fields)
        except asyncio.CancelledError:
            if job_id in self._cancelling:
                await self._finish(job_id, "cancelled", error="cancelled by request")
            raise
        finally:
            self._running.pop(job_id, None)
            self._cancelling.discard(job_id)
            self._wake.set()

    async def _finish(self, job_id: str, status: str, **fields: Any) -> None:
        if await self.store.finish_job(job_id, "running", status=status, finished_at=time.time(), **fields):
            self._publish(job_id, status)

    async def _attempt(self, job_id: str, request: JobCreate) -> tuple[str, dict[str, Any]]:
        """One run of the job's container: (status, fields to record)."""
        services = self.services
        # The volume is recorded before it exists: a daemon stop at any point leaves the job naming every
        # volume to clean up at the next start.
        volume_id = str(uuid.uuid4())
        await self.store.update_job(job_id, volume_id=volume_id, container=job_id, output_files=[], logs=[])
        await services.volumes.create(volume_id)
        keep_volume = False
        created = False
        try:
            for item in request.input_files:
                data = await self.files.read_all(item.source)
                await write_bytes(services, volume_id, item.destination.lstrip("/"), data)
            limits: dict[str, Any] = {}
            if request.resources.memory_limit:
                limits["memory"] = request.resources.memory_limit
            if request.resources.cpu_limit:
                limits["cpu"] = request.resources.cpu_limit
            runtime = await services.resolve_image(request.image)
            spec = ContainerSpec.model_validate({
                "internal_id": job_id, "image": runtime, "volume_id": volume_id,
                "startup_command": command_line(request.command), "environment": request.environment,
                "limits": limits, "description": f"container-codes job {request.name}",
            })
            await services.servers.create(spec)
            created = True
            await self.store.remember_image(job_id, request.image, runtime)  # what /api/containers shows
            exit_code = await asyncio.wait_for(self._execute(job_id), request.time_limit())
            logs = services.servers.logs(job_id, LOG_LINES)
            outputs = matching(await walk_files(services, volume_id), request.output_patterns)
            keep_volume = bool(outputs)
            fields: dict[str, Any] = {"exit_code": exit_code, "logs": logs, "output_files": outputs}
            if exit_code != 0:
                fields["error"] = f"exited with code {exit_code}"
            return ("completed" if exit_code == 0 else "failed"), fields
        except TimeoutError:
            logs = services.servers.logs(job_id, LOG_LINES) if created else []
            return "failed", {"error": f"timed out after {request.time_limit():g}s", "logs": logs}
        except LightdError as exc:
            return "failed", {"error": exc.message}
        finally:
            await asyncio.shield(self._clean_up(job_id, volume_id, created, keep_volume))

    async def _execute(self, job_id: str) -> int:
        servers = self.services.servers
        server = servers.get(job_id)
        await servers.wait_installed(server)  # within the job's time limit
        # Subscribed before the start: a command that ends at once still delivers its exit.
        with self.services.events.subscribe(server=job_id, kinds={"event"}, maxsize=256) as events:
            await servers.power_and_wait(job_id, "start")
            async for event in events:
                if isinstance(event.data, ServerExited):
                    return event.data.exit_code
        raise LightdError("the job's container went away")

    async def _clean_up(self, job_id: str, volume_id: str, created: bool, keep_volume: bool) -> None:
        servers = self.services.servers
        try:
            if created and job_id in servers:
                await servers.delete(job_id)
            if created:
                await self.store.forget_image(job_id)
            if not keep_volume:
                await self.services.volumes.delete(volume_id)
                await self.store.update_job(job_id, volume_id=None)
        except LightdError as exc:
            log.warning("container codes: cleaning up job %s: %s", job_id, exc)

    def _publish(self, job_id: str, status: str) -> None:
        progress = 100.0 if status in TERMINAL else 0.0 if status == "queued" else None
        self.services.events.publish(BUS_KIND, None, JobStatusChanged(job_id, status, progress))


def _backoff(request: JobCreate, attempt: int) -> float:
    policy = request.retry_policy
    delay = float(policy.delay)
    if policy.backoff == "none":
        return 0.0
    if policy.backoff == "linear":
        return delay * attempt
    if policy.backoff == "exponential":
        return min(delay * 2 ** (attempt - 1), 300.0)
    return delay


JOB_RUNNER = web.AppKey("container_codes_jobs", JobRunner)
"""The daemon's one job runner (on the main application, see CompatServices.shared)."""
