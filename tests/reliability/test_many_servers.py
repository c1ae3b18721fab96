"""More running servers than aiohttp's default connection pool can hold streams for (2 per server)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.servers.helpers import make_volume, wait_install, wait_state

pytestmark = [pytest.mark.reliability]

COUNT = 60


async def test_sixty_running_servers_keep_the_engine_usable(dapi):
    ids = [f"many{i:02d}" for i in range(COUNT)]
    for internal_id in ids:
        status, body = await dapi.post("/containers", json={
            "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": await make_volume(dapi),
            "startup_command": "echo up; while true; do sleep 5; echo tick; done", "start_pattern": "^up$"})
        assert status == 202, body

    async def all_in(field: str, value: str) -> bool:
        _, listing = await dapi.get("/containers")
        return all(c[field] == value for c in listing["containers"])

    await wait_for(lambda: all_in("install_state", "ready"), timeout=180, interval=0.5)
    for internal_id in ids:
        status, body = await dapi.post(f"/containers/{internal_id}/start")
        assert status == 202, body
    await wait_for(lambda: all_in("state", "running"), timeout=180, interval=0.5)
    await asyncio.sleep(3)  # every console and stats stream is open now
    # the engine is still reachable for everything else: no 503, a new server installs and starts
    status, body = await dapi.post("/containers", json={
        "internal_id": "one-more", "image": TEST_IMAGE, "volume_id": await make_volume(dapi),
        "startup_command": "sleep 1000"})
    assert status == 202, body
    await wait_install(dapi, "one-more", "ready", timeout=60)
    status, body = await dapi.post("/containers/one-more/start")
    assert status == 202, body
    await wait_state(dapi, "one-more", "running", timeout=60)
    _, stats = await dapi.get(f"/containers/{ids[-1]}/stats")
    assert stats["state"] == "running"
    _, listing = await dapi.get("/containers")
    states = {c["internal_id"]: (c["state"], c["exit_code"]) for c in listing["containers"] if c["state"] != "running"}
    assert not states, states
