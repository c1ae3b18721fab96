"""Remote sync: install and power state changes become updates in the SQLite outbox, then are delivered to
the panel (`POST {remote.url}/update`).

Ordering: one delivery loop sends the outbox strictly in outbox order, one request at a time. A row leaves
the outbox only when the panel acknowledged it (2xx) or it was dropped (a 4xx other than 408/429), so a
server's next update is never sent before its previous one is settled. Head-of-line blocking is accepted:
a panel that is down for one server is down for all of them.

Retries: connection errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff from
`retry_initial_seconds`, doubling up to `retry_max_seconds`, with +-10% jitter; a success or a reload
resets it.

Delivery is at least once: a crash between the panel's 2xx and our ack sends that row again; the
per-server `seq` lets the panel drop the duplicate. A clean shutdown lets an in-flight request finish.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp
import orjson

from lightd.backups.events import BackupEvent
from lightd.transfers.events import TransferEvent
from lightd.config import RemoteConfig
from lightd.events import Event, EventBus, Subscription
from lightd.servers.events import (
    ActionFailed, InstallFailed, InstallStateChanged, ServerCrashed, ServerDeleted, SftpActivity, StateChanged,
)
from lightd.store import Store
from lightd.tasks import TaskOwner
from lightd.timestamps import rfc3339

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429})
# The collector only writes to SQLite, so it keeps up; the bound is for a stalled disk. Overflow drops the
# oldest event (the bus's policy) and is logged and counted in status()["missed_events"].
SUBSCRIPTION_SIZE = 10_000
BATCH = 100


def update_for(event: Event) -> dict[str, Any] | None:
    """The panel update an event becomes, or None when the panel is not told about it."""
    if event.kind != "event" or event.server is None:
        return None
    base: dict[str, Any] = {"event": "update", "server": event.server}
    match event.data:
        case StateChanged(state=status) | InstallStateChanged(state=status):
            base["status"] = status
        case ServerDeleted():
            base["status"] = "deleted"
        case ServerCrashed(exit_code=exit_code, oom_killed=oom_killed):
            base.update(status="crashed", exit_code=exit_code, oom_killed=bool(oom_killed))
        case InstallFailed(error=error):
            base["error"] = "failed"
            base["data"] = str(error or "install failed")
        case ActionFailed(action=action, message=message) if action:
            # A power action, reinstall or rebind that failed (e.g. a start refused by a mount or disk check).
            base["error"] = f"{action}_failed"
            base["data"] = str(message or "")
        case SftpActivity():
            # An SFTP session's login, upload, delete, rename, mkdir or rmdir (Wings' activity log).
            wire = event.data.wire
            del wire["type"]
            base.update(status=SftpActivity.TYPE, data=wire)
        case BackupEvent(type=kind, details=details) | TransferEvent(type=kind, details=details):
            # backup_started / _progress / _completed / _failed, restore_completed / _failed,
            # transfer_started / _progress / _completed / _failed
            base.update(status=kind, data=details)
        case _:
            return None
    base["ts"] = rfc3339(event.ts)
    return base


class Backoff:
    """Exponential delays: initial, doubling, capped, with small jitter so many daemons do not align."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next retry."""
        delay = min(self.maximum, self.initial * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return delay * random.uniform(0.9, 1.1)

    def reset(self) -> None:
        self.attempts = 0


class RemoteSync:
    """The panel client: outbox writer, in-order delivery loop and health check."""

    def __init__(self, config: RemoteConfig, store: Store, events: EventBus) -> None:
        self.config = config
        self.store = store
        self.events = events
        self._tasks = TaskOwner("remote-sync")
        self._session: aiohttp.ClientSession | None = None
        self._sub: Subscription | None = None
        self._collector: asyncio.Task[None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # new rows, reload, close
        self._retry_now = asyncio.Event()  # cuts a backoff sleep short: reload, close
        self._backoff = Backoff(config.retry_initial_seconds, config.retry_max_seconds)
        self._closing = False
        self._missed = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_delivered_at: float | None = None
        self.panel_healthy: bool | None = None
        self.delivery_failures = 0
        """Failed deliveries and health checks (each retried or dropped) since start (GET /metrics)."""

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the bus and start collecting, delivering (what is pending too) and checking health."""
        self._session = aiohttp.ClientSession()
        self._sub = self.events.subscribe(kinds={"event"}, maxsize=SUBSCRIPTION_SIZE)
        self._collector = self._tasks.spawn(self._collect(self._sub), name="collect")
        self._deliverer = self._tasks.spawn(self._deliver_loop(), name="deliver")
        self._start_health_check()
        if self.config.enabled:
            log.info("remote sync to %s enabled; %d updates pending", self.config.url, await self.store.outbox_depth())

    async def close(self) -> None:
        """Persist what the bus already handed us, let an in-flight request finish, then stop."""
        if self._sub is not None:
            self._sub.close()
        if self._collector is not None:
            await asyncio.wait([self._collector], timeout=5)
        self._closing = True
        self._wake.set()
        self._retry_now.set()
        if self._deliverer is not None:
            await asyncio.wait([self._deliverer], timeout=self.config.request_timeout_seconds + 1)
        await self._tasks.close()
        if self._session is not None:
            await self._session.close()

    def reload(self, config: RemoteConfig) -> None:
        """Swap the remote config live; delivery and the health check start over with it."""
        self.config = config
        self._backoff = Backoff(config.retry_initial_seconds, config.retry_max_seconds)
        self.panel_healthy = None
        self._start_health_check()
        self._wake.set()
        self._retry_now.set()
        log.info("remote sync reloaded: enabled=%s url=%s", config.enabled, config.url)

    async def status(self) -> dict[str, Any]:
        """Where delivery stands: queue depth, drops, last error and success, panel health."""
        return {
            "enabled": self.config.enabled,
            "url": self.config.url,
            "queue_depth": await self.store.outbox_depth(),
            "dropped": await self.store.dropped_count(),
            "missed_events": self._missed,
            "last_error": self.last_error,
            "last_error_at": rfc3339(self.last_error_at),
            "last_delivered_at": rfc3339(self.last_delivered_at),
            "panel_healthy": self.panel_healthy,
        }

    # -- outbox writer -------------------------------------------------------------------------------
    async def _collect(self, sub: Subscription) -> None:
        # Only enqueues: persisting is fast and never waits on the network, so the bus queue stays short.
        async for event in sub:
            self._note_missed(sub)
            update = update_for(event)
            if update is None or not self.config.enabled:
                continue
            try:
                await self.store.enqueue_update(update["server"], update, self.config.outbox_max_rows)
            except Exception:  # noqa: BLE001 - one failed write must not end collection
                log.exception("remote sync: could not queue %s update for %s", update.get("status"), event.server)
                continue
            self._wake.set()

    def _note_missed(self, sub: Subscription) -> None:
        if sub.dropped > self._missed:
            log.warning("remote sync: %d state events lost to bus overflow", sub.dropped - self._missed)
            self._missed = sub.dropped

    # -- delivery ------------------------------------------------------------------------------------
    async def _deliver_loop(self) -> None:
        while not self._closing:
            # Cleared before reading so a row queued meanwhile sets it again and is not slept through.
            self._wake.clear()
            try:
                rows = await self.store.pending_updates(BATCH) if self.config.enabled else []
                if not rows:
                    await self._wake.wait()
                    continue
                for row in rows:
                    if self._closing or not self.config.enabled:
                        break
                    if not await self._deliver(row):
                        await self._sleep_backoff()
                        break
            except Exception:  # noqa: BLE001 - a store hiccup must not end delivery for good
                log.exception("remote sync: delivery loop error; retrying")
                await self._sleep_backoff()

    async def _deliver(self, row: dict[str, Any]) -> bool:
        """Send one outbox row. False means: retry it later (it stays at the head)."""
        config = self.config
        try:
            async with self._request("POST", "/update", config, data=orjson.dumps(row["payload"])) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self.panel_healthy = False
            self._error(f"POST /update: {_describe(exc)}")
            await self.store.bump_attempts(row["seq"])
            return False
        if 200 <= status < 300:
            await self.store.ack_update(row["seq"])
            self._backoff.reset()
            self.last_delivered_at = time.time()
            self.panel_healthy = True
            return True
        if 400 <= status < 500 and status not in RETRYABLE_STATUSES:
            # The panel refuses this update; retrying cannot help and would block every later one.
            await self.store.drop_update(row["seq"], f"http {status}")
            self._error(f"POST /update: http {status}; update {row['server']}#{row['server_seq']} dropped")
            log.warning("remote sync: panel answered %d; dropped update %s#%s", status, row["server"], row["server_seq"])
            return True
        self._error(f"POST /update: http {status}")
        await self.store.bump_attempts(row["seq"])
        return False

    async def _sleep_backoff(self) -> None:
        self._retry_now.clear()
        if self._backoff.attempts == 0:
            # Once per failure streak: the panel being down must not flood the log.
            log.warning("remote sync: delivery failing (%s); retrying with backoff", self.last_error)
        delay = self._backoff.next_delay()
        try:
            await asyncio.wait_for(self._retry_now.wait(), delay)
        except TimeoutError:
            pass

    # -- health --------------------------------------------------------------------------------------
    def _start_health_check(self) -> None:
        if self._health is not None and not self._health.done():
            self._health.cancel()
        self._health = None
        if self.config.enabled and not self._closing:
            self._health = self._tasks.spawn(self._health_loop(self.config), name="health")

    async def _health_loop(self, config: RemoteConfig) -> None:
        # The daemon runs regardless of the panel; this only reports and retries until the panel answers.
        backoff = Backoff(config.retry_initial_seconds, config.retry_max_seconds)
        while not await self._check_health(config):
            await asyncio.sleep(backoff.next_delay())
        log.info("remote panel at %s is healthy", config.url)

    async def _check_health(self, config: RemoteConfig) -> bool:
        try:
            async with self._request("GET", "/health", config) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return self._unhealthy(f"GET /health: {_describe(exc)}")
        if not isinstance(body, dict) or body.get("status") != 200 or body.get("endpoint") != "active":
            return self._unhealthy(f"GET /health: http {resp.status}, unexpected answer")
        self.panel_healthy = True
        return True

    def _unhealthy(self, message: str) -> bool:
        if self.panel_healthy is not False:
            # Once per outage: a panel down for hours must not flood the log.
            log.warning("remote panel unhealthy: %s", message)
        self.panel_healthy = False
        self._error(message)
        return False

    # -- helpers -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, config: RemoteConfig, **kwargs: Any) -> Any:
        if self._session is None:
            raise RuntimeError("remote sync is not started")
        headers = {"Authorization": f"Bearer {config.token}", "Content-Type": "application/json"}
        return self._session.request(
            method, config.url.rstrip("/") + path, headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.request_timeout_seconds), **kwargs,
        )

    def _error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()
        self.delivery_failures += 1


def _describe(exc: BaseException) -> str:
    # aiohttp's messages name the host, never our headers: safe to keep and show (the token is a header).
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
