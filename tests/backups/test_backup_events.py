"""Backup and restore events reach the console socket (as `event` frames) and the panel (remote sync)."""

from __future__ import annotations

import os

import pytest

from lightd.app import create_app
from tests.api.ws_helpers import connect
from tests.backups.helpers import backup, restore, server_with_files
from tests.conftest import Api, wait_for

pytestmark = pytest.mark.docker


async def test_events_on_the_console_socket_and_to_the_panel(panel, make_config, container_prefix, aiohttp_client,
                                                             auth_headers, node_token):
    config = make_config(docker={"container_prefix": container_prefix}, remote=panel.remote(),
                         backups={"write_limit_mib_s": 4})
    client = await aiohttp_client(create_app(config))
    api = Api(client, auth_headers)
    await server_with_files(api, "bk-ev", {"a.bin": os.urandom(6 * 1024 * 1024)})
    console = await connect(client, "bk-ev", node_token)
    view = await backup(api, "bk-ev")
    started = await console.event("backup_started")
    assert started == {"type": "backup_started", "backup_id": view["backup_id"], "adapter": "local"}
    completed = await console.event("backup_completed")
    assert completed["size"] == view["size"] and completed["sha256"] == view["sha256"]
    percents = [f["data"]["percent"] for f in console.seen if f["event"] == "event" and f["data"]["type"] == "backup_progress"]
    assert percents and percents == sorted(percents) and all(0 <= p < 100 for p in percents), percents

    await restore(api, "bk-ev", view["backup_id"], truncate=True)
    assert (await console.event("restore_completed"))["backup_id"] == view["backup_id"]
    await console.close()

    await wait_for(lambda: "restore_completed" in panel.statuses(), timeout=15)
    mine = [u for u in panel.updates if u["server"] == "bk-ev"]
    statuses = [u["status"] for u in mine]
    assert statuses[statuses.index("backup_started"):] [:1] == ["backup_started"]
    assert "backup_progress" in statuses and "backup_completed" in statuses
    assert statuses.index("restoring") < statuses.index("restore_completed") < len(statuses)
    assert statuses[statuses.index("restoring"):][-1] in ("offline", "restore_completed")
    done = next(u for u in mine if u["status"] == "backup_completed")
    assert done["data"] == {"backup_id": view["backup_id"], "size": view["size"], "sha256": view["sha256"]}
