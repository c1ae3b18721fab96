"""The ProxiCloud state of one daemon, served under /compat/proxicloud and on its own port alike: the vmid
table (SQLite, cached here), the activity log (fed by the event bus) and the analytics collector. The front
end starts its two background tasks after the daemon's services and ends them before those close."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any

import psutil
from aiohttp import web

from lightd.compat.proxicloud import analytics
from lightd.compat.proxicloud.store import ProxiCloudStore
from lightd.errors import Conflict, NotFound
from lightd.servers.events import ServerCrashed, ServerDeleted, StateChanged
from lightd.tasks import TaskOwner

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices
    from lightd.servers.server import Server

log = logging.getLogger(__name__)

FIRST_VMID = 100
"""As Proxmox's `cluster/nextid`."""
ACTIVITY_KEEP = 1000
"""Activity entries kept (overflow policy: the oldest are deleted)."""
EVENT_QUEUE = 1024
"""The activity follower's bus queue (overflow: the bus drops the oldest; a dropped state change is
simply missing from the log)."""
RETIRED_KEEP = 256
"""Recently retired vmids remembered in memory, so a late `deleted` event still names its vmid."""
NAME_PREFIX = "proxicloud-"


def activity_of(event: object) -> tuple[str, str | None] | None:
    """The activity entry (action, details) a server event becomes, whatever front end or the native API
    caused it; None for the events the log leaves out."""
    match event:
        case StateChanged(state="running"):
            return "start", None
        case StateChanged(state="offline"):
            return "stop", None
        case ServerDeleted():
            return "delete", None
        case ServerCrashed(exit_code=exit_code):
            return "crash", f"exit code {exit_code}"
    return None


def node_name() -> str:
    """The host name as Proxmox allows node names (letters, digits, '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "lightd"


class ProxiCloudNode:
    """vmids, activity and analytics for every ProxiCloud app of one daemon."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.name = node_name()
        self._by_server: dict[str, int] = {}
        self._by_vmid: dict[int, str] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._retired: dict[str, tuple[int, str]] = {}
        """Recently retired: server -> (vmid, name), for the events that arrive after."""
        self._creating: set[str] = set()
        self._create_spans: dict[str, tuple[float, float]] = {}
        """When each recent ProxiCloud create ran: the events of that span are the create's own."""
        self._tasks: TaskOwner | None = None
        self._collecting = False
        self._task_seq = 0
        self.store = ProxiCloudStore(lambda: services.store)
        self.collector = analytics.Collector(services, self.store, self.sync)
        self._in_use = False
        """Served on its own port, asked anything, or used before (it has tables): until then nothing is
        written, so a front end never used leaves no tables."""

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the vmid table and start the activity follower (and the collector, once in use)."""
        self._in_use = (self._in_use or self.services.config.compat.proxicloud.enabled
                        or await self.store.ensure(create=False))
        await self._load()
        # Primes psutil's CPU baseline: later calls measure since the previous one and never sleep.
        await asyncio.to_thread(psutil.cpu_percent, None)
        self._tasks = TaskOwner("proxicloud")  # before anything can fail: close() then ends what started
        # Subscribed here, synchronously: no event between now and the follower's first step is lost.
        sub = self.services.events.subscribe(kinds={"event"}, maxsize=EVENT_QUEUE)
        self._tasks.spawn(self._follow(sub), name="activity")
        if self.services.config.compat.proxicloud.enabled or await self.store.has_samples():
            self.start_collecting()

    def start_collecting(self) -> None:
        """Analytics are sampled once ProxiCloud is in use: served on its own port, asked anything on the
        main port's mount, or sampled before (the history goes on after a restart). A daemon whose
        ProxiCloud API is never used writes no samples (30 s x 30 days is ~86k rows per container)."""
        self._in_use = True
        if self._tasks is not None and not self._collecting:
            self._collecting = True
            self._tasks.spawn(self.collector.run(), name="analytics")

    async def close(self) -> None:
        """Stop the background tasks (before the daemon's store closes)."""
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            self._collecting = False
            await tasks.close(timeout=5.0)

    async def _load(self) -> None:
        self._by_server.clear()
        self._by_vmid.clear()
        self._options.clear()
        for row in await self.store.vmids():
            self._remember(row["server"], int(row["vmid"]), row["options"])
        present = {s.id for s in self._servers()}
        for server in [name for name in self._by_server if name not in present]:
            await self.retire(server)  # deleted while the front end was not running
        if self._in_use:
            await self.sync()

    # -- vmids ----------------------------------------------------------------------------------------
    def _servers(self) -> list[Server]:
        return [s for s in self.services.servers if not s.deleted]

    def _remember(self, server: str, vmid: int, options: dict[str, Any]) -> None:
        self._retired.pop(server, None)  # the id is a new container's now
        self._by_server[server] = vmid
        self._by_vmid[vmid] = server
        self._options[server] = options

    async def sync(self) -> list[tuple[int, Server]]:
        """Every server with its vmid, by vmid; a server seen for the first time (made through another API)
        gets one now and an `import` activity entry."""
        result = []
        for server in self._servers():
            vmid = self._by_server.get(server.id)
            if vmid is None:
                if server.id in self._creating:
                    continue  # its ProxiCloud create is still reserving
                vmid, allocated = await self.store.assign_vmid(server.id, {}, FIRST_VMID)
                self._remember(server.id, vmid, self._options.get(server.id, {}))
                if allocated:
                    details = f"Created outside ProxiCloud (image {server.spec.image})"
                    await self.record("import", vmid, server.id, details)
            result.append((vmid, server))
        result.sort(key=lambda pair: pair[0])
        return result

    def vmid_of(self, server: str) -> int | None:
        retired = self._retired.get(server)
        return self._by_server.get(server, retired[0] if retired else None)

    def options_of(self, server: str) -> dict[str, Any]:
        """What a ProxiCloud create asked for (template, cores, memory, hostname...); {} for other containers."""
        return self._options.get(server, {})

    def name_of(self, server: str) -> str:
        """The container's name as ProxiCloud shows it: the hostname its create asked for, else its id."""
        retired = self._retired.get(server)
        return self._options.get(server, {}).get("hostname") or (retired[1] if retired else server)

    def internal_id_for(self, hostname: str) -> str:
        """A new container's internal id: ids are unique, hostnames are not (Proxmox lets two containers
        share one), so the hostname when no server, create or vmid holds it as an id, else `<hostname>-<n>`."""
        taken = {s.id for s in self.services.servers} | self._creating | set(self._by_server)
        candidate, n = hostname, 1
        while candidate in taken:
            n += 1
            candidate = f"{hostname[:63 - len(str(n)) - 1]}-{n}"
        return candidate

    async def find(self, vmid: int) -> Server:
        """The live server behind `vmid`, or NotFound."""
        await self.sync()
        name = self._by_vmid.get(vmid)
        server = self.services.servers.find(name) if name is not None else None
        if server is None or server.deleted:
            raise NotFound(f"Container {vmid} not found")
        return server

    async def reserve(self, server: str, options: dict[str, Any], within: tuple[int, int] | None = None) -> int:
        """A vmid for a container about to be created through ProxiCloud (Conflict if the name is taken);
        `within`: the lowest never given in that range (Conflict when there is none)."""
        if server in self.services.servers or server in self._creating:
            raise Conflict(f"Container name '{server}' is already in use")
        if server in self._by_server:
            await self.retire(server)  # a stale mapping: its `deleted` event was dropped
        self._creating.add(server)
        try:
            if within is None:
                vmid, allocated = await self.store.assign_vmid(server, options, FIRST_VMID)
            else:
                found = await self.store.assign_vmid_in(server, options, *within)
                vmid, allocated = found or 0, found is not None
        except BaseException:
            self._creating.discard(server)
            raise
        if not allocated:
            self._creating.discard(server)
            if within is not None:
                low, high = within
                raise Conflict(f"VMID {low} is already in use" if low == high else f"no free VMID in {low}-{high}")
            raise Conflict(f"Container name '{server}' is already in use")
        self._remember(server, vmid, options)
        return vmid

    def created(self, server: str, began: float) -> None:
        """The create that reserved `server` at `began` is over (either way)."""
        self._creating.discard(server)
        self._create_spans[server] = (began, time.time())
        while len(self._create_spans) > RETIRED_KEEP:
            self._create_spans.pop(next(iter(self._create_spans)))

    def _during_create(self, server: str, ts: float) -> bool:
        if server in self._creating:
            return True
        span = self._create_spans.get(server)
        return span is not None and span[0] <= ts <= span[1]

    async def retire(self, server: str) -> int | None:
        """The container is gone: its vmid is retired (never given again) with its samples."""
        vmid = await self.store.retire_vmid(server)
        vmid = self._by_server.pop(server, vmid)
        name = self.name_of(server)
        self._options.pop(server, None)
        if vmid is not None:
            self._by_vmid.pop(vmid, None)
            self._retired[server] = (vmid, name)
            while len(self._retired) > RETIRED_KEEP:
                self._retired.pop(next(iter(self._retired)))
        self.collector.forget(server)
        return vmid

    def generate_name(self) -> tuple[str, int]:
        """The first `proxicloud-NNN` not in use (as a name or an id), and its counter."""
        taken = {name for s in self.services.servers for name in (s.id, self.name_of(s.id))} | self._creating
        counter = 1
        while f"{NAME_PREFIX}{counter:03d}" in taken:
            counter += 1
        return f"{NAME_PREFIX}{counter:03d}", counter

    def upid(self, task_type: str, vmid: int) -> str:
        """A Proxmox task id (`UPID:node:pid:pstart:starttime:type:id:user:`) for an action just begun."""
        self._task_seq += 1
        started = int(time.time())
        return f"UPID:{self.name}:{os.getpid():08X}:{self._task_seq:08X}:{started:08X}:{task_type}:{vmid}:root@pam:"

    # -- activity -------------------------------------------------------------------------------------
    async def record(self, action: str, vmid: int | None, name: str, details: str | None = None) -> None:
        await self.store.add_activity(action, vmid, name, details, ACTIVITY_KEEP)

    async def recent_activity(self, limit: int) -> list[dict[str, Any]]:
        """The newest entries in the doc's shape (`details` only where there are some)."""
        entries = []
        for row in await self.store.activity(limit):
            entry = {"timestamp": int(row["ts"]), "action": row["action"], "vmid": row["vmid"], "name": row["name"]}
            if row["details"]:
                entry["details"] = row["details"]
            entries.append(entry)
        return entries

    async def _follow(self, sub: Any) -> None:
        with sub:
            async for event in sub:
                activity = activity_of(event.data)
                if not self._in_use or activity is None or event.server is None:
                    continue  # nothing is recorded for a ProxiCloud never used
                action, details = activity
                if self._during_create(event.server, event.ts):
                    continue  # a ProxiCloud create records its own entries (none when it fails)
                name = self.name_of(event.server)  # before a delete retires it
                try:
                    if action == "delete" and event.server in self._by_server:
                        await self.retire(event.server)
                    elif event.server not in self._by_server:
                        await self.sync()  # made through another API since the last look
                    vmid = self.vmid_of(event.server)
                    if vmid is None:
                        continue  # a server never seen with a vmid (its create failed early)
                    await self.record(action, vmid, name, details)
                except Exception:  # noqa: BLE001 - one failed write must not end the log
                    log.exception("proxicloud: recording activity for %s failed", event.server)


NODE = web.AppKey("proxicloud_node", ProxiCloudNode)
"""On every application of the ProxiCloud front end: its one node."""


def node_of(request: web.Request) -> ProxiCloudNode:
    return request.config_dict[NODE]
