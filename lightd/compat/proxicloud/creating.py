"""The one ProxiCloud create, whichever flavour of its API asked: a vmid is reserved, the container is made
with `CompatServices.create_and_start`, and the activity log gets the create's own entries. On failure the
vmid is retired with nothing else left behind."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices
    from lightd.compat.proxicloud.node import ProxiCloudNode
    from lightd.servers.server import Server

MIB = 1024 * 1024


def host_cores() -> int:
    return os.cpu_count() or 1


async def create_container(
    services: CompatServices, node: ProxiCloudNode, name: str, template: str, options: dict[str, Any], *,
    memory_mb: int, cores: int, start: bool, within: tuple[int, int] | None = None,
) -> tuple[int, Server]:
    """Create (and with `start` start) container `name` (its hostname: another container may have it too)
    from `template` (an already resolved template id); its vmid and server. The server's internal id is its
    own (`node.internal_id_for`); `options` are kept with the vmid, the hostname among them; `within` bounds
    the vmid (see node.reserve)."""
    began = time.time()
    server_id = node.internal_id_for(name)
    vmid = await node.reserve(server_id, {**options, "hostname": name}, within)
    try:
        server = await services.create_and_start(
            server_id, template, description=f"ProxiCloud CT {vmid}", memory=memory_mb * MIB,
            cpu=float(min(cores, host_cores())), start=start,
        )
    except BaseException:
        try:
            await node.retire(server_id)  # create_and_start left nothing behind; the vmid goes too
        finally:
            node.created(server_id, began)
        raise
    try:
        # Recorded before the create is over: the activity follower leaves this container's events to it.
        await node.record("create", vmid, name, f"Created from {template}")
        if start:
            await node.record("start", vmid, name)
    finally:
        node.created(server_id, began)
    return vmid, server
