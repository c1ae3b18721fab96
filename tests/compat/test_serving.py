"""Each compat front end is built once per daemon and serves the same state on both paths (mounted under
/compat/<name> and on its own port); its background work and own-port listener are cleanup_ctx of the
main app, so the unwind at stop goes on past a failing front end and the store closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lightd import keys
from lightd.app import create_app
from lightd.compat.container_codes.jobs import JOB_RUNNER
from lightd.compat.proxicloud.node import NODE
from lightd.compat.serving import FRONT_ENDS
from lightd.config import Config
from tests.compat.helpers import free_port
from tests.conftest import TEST_IMAGE, wait_for

TEMPLATE = "ubuntu-24.04-standard"


def all_enabled(make_config: Callable[..., Config], **overrides: Any) -> tuple[Config, dict[str, int]]:
    ports = {spec.name: free_port() for spec in FRONT_ENDS}
    compat: dict[str, Any] = {name: {"enabled": True, "port": port} for name, port in ports.items()}
    return make_config(compat=compat, **overrides), ports


def named_tasks(prefix: str) -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done())


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_one_front_end_serves_both_paths(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config],
                                               node_token: str, container_prefix: str, no_blocking_calls: None):
    config, ports = all_enabled(make_config, docker={"container_prefix": container_prefix,
                                                     "image_map": {TEMPLATE: TEST_IMAGE}})
    client = await aiohttp_client(create_app(config))
    front_ends = client.app[keys.COMPAT_FRONT_ENDS]
    assert sorted(front_ends) == sorted(spec.name for spec in FRONT_ENDS)
    mounted = {app[keys.FRONT_END]: app for app in client.app._subapps}
    assert mounted["proxicloud"][NODE] is front_ends["proxicloud"].node
    assert mounted["container_codes"][JOB_RUNNER] is front_ends["container_codes"].jobs
    # one set of background tasks per daemon, though each front end is served twice
    assert named_tasks("proxicloud:") == ["proxicloud:activity", "proxicloud:analytics"]
    assert named_tasks("container-codes-jobs:") == ["container-codes-jobs:dispatcher"]
    assert named_tasks("lxc_tools:") == ["lxc_tools:socketio-updates"]

    bearer = {"Authorization": f"Bearer {node_token}"}
    async with aiohttp.ClientSession(headers=bearer) as http:
        own = f"http://127.0.0.1:{ports['proxicloud']}/api"
        async with http.post(f"{own}/containers", json={"hostname": "both-ways", "template": TEMPLATE,
                                                         "memory": 64, "start": True}) as resp:
            created = await resp.json()
            assert resp.status == 201, created
        vmid = created["vmid"]
        # made on its own port, seen through the mount: the same vmid, activity and analytics
        async with client.get("/compat/proxicloud/api/containers", headers=bearer) as resp:
            listing = await resp.json()
        assert [(c["vmid"], c["name"]) for c in listing["containers"]] == [(vmid, "both-ways")]
        async with client.get("/compat/proxicloud/api/dashboard/summary", headers=bearer) as resp:
            activity = (await resp.json())["recent_activity"]
        assert ("create", vmid) in [(a["action"], a["vmid"]) for a in activity], activity

        async def sampled() -> Any:
            async with client.get(f"/compat/proxicloud/api/analytics/{vmid}/memory", headers=bearer) as resp:
                return (await resp.json())["data"]

        await wait_for(sampled, timeout=60)

        # a Container Codes job submitted on its own port is the mount's job too
        own = f"http://127.0.0.1:{ports['container_codes']}/api"
        async with http.post(f"{own}/proxy/upstreams", json={
                "name": "shared", "servers": [{"address": "127.0.0.1:9"}]}) as resp:
            assert resp.status == 201, await resp.text()
        async with client.get("/compat/container-codes/api/proxy/upstreams", headers=bearer) as resp:
            upstreams = await resp.json()
        assert "shared" in str(upstreams), upstreams
        async with http.post(f"{own}/jobs", json={"name": "own-port", "image": TEST_IMAGE, "command": "true"}) as resp:
            job_id = (await resp.json())["job_id"]

        async def done() -> Any:
            async with client.get(f"/compat/container-codes/api/jobs/{job_id}", headers=bearer) as resp:
                body = await resp.json()
                return body if body["status"] in ("completed", "failed") else None

        assert (await wait_for(done, timeout=60))["status"] == "completed"

    await client.close()  # the daemon stops: listeners, front ends, then the services
    for port in ports.values():
        assert await refused(port)
    assert named_tasks("proxicloud:") == [] and named_tasks("container-codes-jobs:") == []
    with pytest.raises(RuntimeError, match="not open"):
        client.app[keys.STORE].db


def failing(where: str) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        if where == "start":
            raise RuntimeError(f"front end failed to {where}")
        yield
        raise RuntimeError(f"front end failed to {where}")

    return running


@pytest.mark.parametrize("where", ["close", "start"])
async def test_a_failing_front_end_still_lets_the_store_close(make_config: Callable[..., Config], where: str,
                                                              no_blocking_calls: None):
    """As `lightd serve` runs the app (lightd.server_main): the others front ends and their listeners stop,
    and the store closes, whether a front end fails at start or at close."""
    config, ports = all_enabled(make_config)
    app = create_app(config)
    # The LXD panel's front end fails; it sits between the others in the unwind.
    app[keys.COMPAT_FRONT_ENDS]["lxd_panel"].running = failing(where)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        if where == "start":
            with pytest.raises(RuntimeError, match="failed to start"):
                await runner.setup()
        else:
            await runner.setup()
            assert not await refused(ports["container_codes"])
            assert named_tasks("proxicloud:")
    finally:
        if where == "close":
            with pytest.raises(RuntimeError, match="failed to close"):
                await runner.cleanup()
        else:
            await runner.cleanup()
    for port in ports.values():
        assert await refused(port)
    assert named_tasks("proxicloud:") == [] and named_tasks("container-codes-jobs:") == []
    assert named_tasks("lxc_tools:") == []
    with pytest.raises(RuntimeError, match="not open"):
        app[keys.STORE].db


async def test_own_port_only_is_built_once(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config],
                                           node_token: str, no_blocking_calls: None):
    port = free_port()
    config = make_config(compat={"mount_on_main": False, "container_codes": {"enabled": True, "port": port}})
    client = await aiohttp_client(create_app(config))
    assert list(client.app[keys.COMPAT_FRONT_ENDS]) == ["container_codes"]
    assert client.app._subapps == []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {node_token}"}) as http:
        async with http.get(f"http://127.0.0.1:{port}/api/health") as resp:
            assert resp.status == 200
    await client.close()
    assert await refused(port)


async def test_a_failing_shutdown_step_does_not_end_the_shutdown(caplog: pytest.LogCaptureFixture):
    """aiohttp stops at a raising on_shutdown step and then skips every cleanup_ctx (the store's too): a
    front end's steps are logged instead."""
    ran: list[str] = []

    class Broken:
        services = SimpleNamespace(config=Config())  # what application() reads of them: the CORS origins

        def create_app(self) -> web.Application:
            app = web.Application()

            async def fails(app: web.Application) -> None:
                raise RuntimeError("socket close failed")

            async def after(app: web.Application) -> None:
                ran.append("after")

            app.on_shutdown.append(fails)
            app.on_shutdown.append(after)
            return app

    (spec,) = [spec for spec in FRONT_ENDS if spec.name == "lxd_panel"]
    app = spec.application(Broken())  # type: ignore[arg-type]
    app.freeze()
    await app.shutdown()
    assert ran == ["after"]
    assert "compat lxd_panel: a shutdown step failed" in caplog.text
