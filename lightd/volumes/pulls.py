"""Pulls from a URL into a volume: each a background download owned by the PullService's TaskOwner, fetched
through the SSRF-guarded client (`lightd/net_guard.py`) and written through `IncomingFile` (temp file,
size cap and disk limit per chunk, rename when complete).

Pulls live in memory: a daemon restart forgets them (the temp file of one it interrupted is removed by the
next start's `VolumeService.clean_temp_files`). Per volume at most `volumes.pull_max_concurrent` run at once
(one more is TooManyPulls) and the last FINISHED_KEPT finished ones are kept for `GET`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from lightd.config import VolumeLimits
from lightd.errors import (
    AddressNotAllowed, Conflict, LightdError, NotFound, PathNotAllowed, PayloadTooLarge, PullFailed, TooManyPulls,
    ValidationFailed,
)
from lightd.net_guard import AddressPolicy, AddressRefused, FetchFailed, GuardedClient, check_url
from lightd.tasks import TaskOwner
from lightd.timestamps import rfc3339
from lightd.volumes.incoming import entry_name
from lightd.volumes.sandbox import split_path
from lightd.volumes.service import VolumeService
from lightd.volumes.transfer import receive

log = logging.getLogger(__name__)

PullState = Literal["running", "completed", "failed", "cancelled"]
FINISHED_KEPT = 20
"""Finished pulls kept per volume for GET (oldest forgotten first)."""
CHUNK = 256 * 1024
DEFAULT_NAME = "download"
CANCEL_WAIT_SECONDS = 10.0


@dataclass
class Pull:
    """One pull: what was asked, and how far it got."""

    id: str
    volume_id: str
    url: str
    directory: str
    file_name: str | None
    state: PullState = "running"
    path: str | None = None
    bytes: int = 0
    total: int | None = None
    error: dict[str, str] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "volume_id": self.volume_id, "url": self.url, "directory": self.directory,
                "file_name": self.file_name, "state": self.state, "path": self.path, "bytes": self.bytes,
                "total": self.total, "error": self.error, "created_at": rfc3339(self.created_at),
                "finished_at": rfc3339(self.finished_at) if self.finished_at is not None else None}


def safe_file_name(candidate: str | None) -> str | None:
    """A name a remote server suggested (Content-Disposition, the URL's last segment) reduced to a plain base
    name without control characters; None when nothing usable is left."""
    if not candidate:
        return None
    name = candidate.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()  # SECURITY: Content-Disposition path tricks
    try:
        return entry_name(name)
    except PathNotAllowed:
        return None


def response_file_name(response: aiohttp.ClientResponse) -> str:
    """The name a download is saved under when the request named none: Content-Disposition's file name,
    else the final URL's last path segment, else "download"."""
    disposition = response.content_disposition
    return (safe_file_name(disposition.filename if disposition else None)
            or safe_file_name(response.url.name) or DEFAULT_NAME)


class PullService:
    """Starts, lists and cancels the pulls of every volume."""

    def __init__(self, volumes: VolumeService, limits: VolumeLimits, *, resolver: AbstractResolver | None = None) -> None:
        self.volumes = volumes
        self.limits = limits
        self.policy = AddressPolicy(limits.pull_allowed_networks)
        self.resolver = resolver
        """Resolves names before the policy filters them (None: aiohttp's default; tests pass their own)."""
        self.tasks = TaskOwner("pulls")
        self._pulls: dict[str, dict[str, Pull]] = {}  # volume id -> pull id -> pull, oldest first
        self._finished: dict[str, deque[str]] = {}

    async def start(self, volume_id: str, url: str, directory: str = "", file_name: str | None = None) -> dict[str, Any]:
        """Check the request and start downloading `url` into `directory` of the volume, in the background."""
        await self.volumes.record(volume_id)  # NotFound
        parsed = self._check_url(url)
        folder = split_path(directory)  # 400 for a bad folder before anything runs
        if file_name is not None:
            entry_name(file_name)
        # 403 at once for a denied folder or name (a name the answer gives is checked when it arrives)
        self.volumes.denylist(volume_id).check(folder + ((file_name,) if file_name is not None else ()))
        pulls = self._pulls.setdefault(volume_id, {})
        running = sum(1 for p in pulls.values() if p.state == "running")
        if running >= self.limits.pull_max_concurrent:
            raise TooManyPulls(f"volume {volume_id} already runs {running} pulls (at most "
                               f"{self.limits.pull_max_concurrent} at once)",
                               details={"limit": self.limits.pull_max_concurrent})
        pull = Pull(secrets.token_hex(8), volume_id, url, directory, file_name)
        pulls[pull.id] = pull
        pull.task = self.tasks.spawn(self._run(pull, parsed), name=f"pull-{pull.id}")
        return pull.view()

    def _check_url(self, url: str) -> URL:
        try:
            parsed = URL(url)
            check_url(parsed, self.policy)
        except AddressRefused as exc:
            raise AddressNotAllowed(f"url: {exc}", details={"field": "url"}) from None
        except ValueError as exc:
            raise ValidationFailed(f"url: {exc}", details={"field": "url"}) from None
        return parsed

    async def list(self, volume_id: str) -> list[dict[str, Any]]:
        """The volume's running pulls and its last finished ones, oldest first."""
        await self.volumes.record(volume_id)
        return [p.view() for p in self._pulls.get(volume_id, {}).values()]

    async def get(self, volume_id: str, pull_id: str) -> dict[str, Any]:
        """One pull; NotFound for an unknown (or forgotten) one."""
        return self._pull(volume_id, pull_id).view()

    async def cancel(self, volume_id: str, pull_id: str) -> dict[str, Any]:
        """Stop a running pull and wait (bounded) until its temp file is gone; 409 for a finished one."""
        pull = self._pull(volume_id, pull_id)
        if pull.state != "running" or pull.task is None:
            raise Conflict(f"pull {pull_id} already finished ({pull.state})", details={"state": pull.state})
        pull.task.cancel()
        await asyncio.wait([pull.task], timeout=CANCEL_WAIT_SECONDS)
        return pull.view()

    def _pull(self, volume_id: str, pull_id: str) -> Pull:
        pull = self._pulls.get(volume_id, {}).get(pull_id)
        if pull is None:
            raise NotFound(f"pull {pull_id} not found", details={"id": pull_id})
        return pull

    async def close(self) -> None:
        """Cancel every running pull (their temp files are removed)."""
        await self.tasks.close()

    # -- the download ----------------------------------------------------------------------------------
    async def _run(self, pull: Pull, url: URL) -> None:
        try:
            await self._download(pull, url)
            pull.state = "completed"
        except asyncio.CancelledError:
            pull.state = "cancelled"
            raise
        except LightdError as exc:
            self._fail(pull, exc)
        except AddressRefused as exc:
            self._fail(pull, AddressNotAllowed(str(exc)))
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, AddressRefused)
            self._fail(pull, AddressNotAllowed(str(exc.os_error)) if refused else PullFailed(f"cannot connect: {exc}"))
        except (FetchFailed, ValueError) as exc:
            self._fail(pull, PullFailed(str(exc)))
        except TimeoutError:
            self._fail(pull, PullFailed(f"timed out (volumes.pull_timeout_seconds is {self.limits.pull_timeout_seconds})"))
        except (aiohttp.ClientError, OSError) as exc:
            self._fail(pull, PullFailed(f"download failed: {exc}"))
        finally:
            pull.finished_at = time.time()
            self._retire(pull)

    async def _download(self, pull: Pull, url: URL) -> None:
        timeout = aiohttp.ClientTimeout(total=self.limits.pull_timeout_seconds, sock_connect=10, sock_read=60)
        client = GuardedClient(self.policy, timeout=timeout, resolver=self.resolver)
        try:
            response = await client.get(url)
            try:
                await self._save(pull, response)
            finally:
                response.release()
        finally:
            await client.close()

    async def _save(self, pull: Pull, response: aiohttp.ClientResponse) -> None:
        limit = self.limits.pull_max_bytes
        pull.total = response.content_length
        if pull.total is not None and pull.total > limit:
            raise PayloadTooLarge(f"the file is {pull.total} bytes, over volumes.pull_max_bytes ({limit})",
                                  details={"limit": limit, "requested": pull.total})
        name = pull.file_name or response_file_name(response)
        incoming = await self.volumes.incoming(pull.volume_id, pull.directory, name, limit)
        pull.path = incoming.path
        if pull.total is not None:
            incoming.budget.check(pull.total)  # a declared size that cannot fit fails before any byte

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in response.content.iter_chunked(CHUNK):
                pull.bytes += len(chunk)
                if pull.bytes > limit:  # stop reading at once (IncomingFile refuses it too)
                    raise PayloadTooLarge(f"the file is over volumes.pull_max_bytes ({limit})", details={"limit": limit})
                yield chunk

        await receive(incoming, counted())  # temp file, size cap and disk limit per write, rename at the end

    def _fail(self, pull: Pull, error: LightdError) -> None:
        pull.state = "failed"
        pull.error = {"error": error.message, "code": error.code}
        log.info("pull %s into volume %s failed: %s", pull.id, pull.volume_id, error.message)

    def _retire(self, pull: Pull) -> None:
        finished = self._finished.setdefault(pull.volume_id, deque())
        finished.append(pull.id)
        pulls = self._pulls.get(pull.volume_id, {})
        while len(finished) > FINISHED_KEPT:
            pulls.pop(finished.popleft(), None)
