"""What the panel sees is the truth across a daemon restart (issue 11, items 1 and 4): a server killed
while the daemon was down is reported crashed with its real exit code (and restarted when its policy says
so); a server that kept running is not announced again."""

from __future__ import annotations

import subprocess
from collections import defaultdict

import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.panel import Panel
from tests.reliability.daemon import Daemon
from tests.reliability.test_daemon_survival import TICKER, create_and_start

pytestmark = [pytest.mark.reliability, pytest.mark.docker]


async def start_one(daemon: Daemon, internal_id: str, state: str, **fields: object) -> None:
    """Create a ticking server, start it and wait until it shows `state`."""
    _, volume = await daemon.call("POST", "/volumes")
    status, body = await daemon.call("POST", "/containers", json={
        "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
        "startup_command": TICKER, **fields})
    assert status == 202, body

    async def shows(field: str, value: str) -> bool:
        return (await daemon.call("GET", f"/containers/{internal_id}"))[1][field] == value

    await wait_for(lambda: shows("install_state", "ready"), timeout=60, interval=0.2)
    assert (await daemon.call("POST", f"/containers/{internal_id}/start"))[0] == 202
    await wait_for(lambda: shows("state", state), timeout=60, interval=0.2)


async def test_exits_while_the_daemon_is_down_are_reported_with_the_real_exit_code(tmp_path, node_token, container_prefix):
    panel = Panel()
    await panel.start()
    daemon = Daemon(tmp_path, node_token, docker={"container_prefix": container_prefix},
                    remote=panel.remote(retry_max_seconds=0.5))

    async def drained() -> bool:
        _, status = await daemon.call("GET", "/remote/status")
        return status["queue_depth"] == 0

    try:
        await daemon.start()
        await create_and_start(daemon, ["keep", "dies"])
        # A third server restarts after a crash; a fourth is still starting (its pattern never matches)
        # when the daemon dies.
        await start_one(daemon, "policy", "running", start_pattern="^tick 1$", restart_on_crash=True)
        await start_one(daemon, "slow", "starting", start_pattern="^never printed$")
        await wait_for(drained, timeout=60, interval=0.2)
        seen = len(panel.updates)

        daemon.kill9()
        for name in ("dies", "policy"):
            subprocess.run(["docker", "kill", f"{container_prefix}{name}"], capture_output=True, check=True)
        await daemon.start()

        async def settled() -> bool:
            _, listing = await daemon.call("GET", "/containers")
            states = {c["internal_id"]: c["state"] for c in listing["containers"]}
            return states.get("dies") == "offline" and states.get("policy") == "running" and await drained()

        await wait_for(settled, timeout=60, interval=0.3)
        after: dict[str, list[dict]] = defaultdict(list)
        for update in panel.updates[seen:]:
            after[update["server"]].append(update)
        assert "keep" not in after and "slow" not in after, after  # still running / starting: nothing new to say
        assert (await daemon.call("GET", "/containers/slow"))[1]["state"] == "starting"
        dies = after["dies"]
        assert [u.get("status") for u in dies] == ["crashed", "offline"], dies
        assert dies[0]["exit_code"] == 137 and dies[0]["oom_killed"] is False
        policy = [u.get("status") for u in after["policy"]]
        assert policy == ["crashed", "offline", "starting", "running"], policy
        _, view = await daemon.call("GET", "/containers/dies")
        assert view["exit_code"] == 137

        # A delete is the server's last update (issue 11, item 5).
        status, body = await daemon.call("DELETE", "/containers/dies")
        assert status == 200, body

        async def deleted_sent() -> bool:
            return any(u["server"] == "dies" and u.get("status") == "deleted" for u in panel.updates)

        await wait_for(deleted_sent, timeout=30, interval=0.2)
        assert [u for u in panel.updates if u["server"] == "dies"][-1]["status"] == "deleted"
        for updates in after.values():  # seq goes on from where it was, without a gap
            seqs = [u["seq"] for u in updates]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    finally:
        daemon.stop()
        await panel.stop()
