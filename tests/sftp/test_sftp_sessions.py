"""SFTP sessions as a whole: revocation and deletion end them, 20 in parallel, the session cap, read-only
states, rate-limited failed logins, the panel's login flow, activity to remote sync, shutdown."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncssh
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lightd import keys
from lightd.sftp.limits import FailureCounter
from tests.conftest import wait_for
from tests.panel import REMOTE_TOKEN, free_port
from tests.sftp.conftest import SftpEnv


async def session_ended(sftp: asyncssh.SFTPClient) -> bool:
    try:
        await asyncio.wait_for(sftp.listdir("/"), 5)
    except (asyncssh.SFTPError, asyncssh.Error, OSError, asyncio.TimeoutError):
        return True
    return False


async def test_revoking_the_token_ends_the_live_session(sftp_env: SftpEnv):
    env = sftp_env
    token, token_id = await env.token()
    other, _ = await env.token()
    async with await env.connect(token) as conn, await env.connect(other) as bystander:
        sftp = await conn.start_sftp_client()
        kept = await bystander.start_sftp_client()
        async with sftp.open("/upload.bin", "wb") as f:
            await f.write(b"x" * 1000)
            status, _ = await env.api.delete(f"/auth/tokens/{token_id}")
            assert status == 200
            await wait_for(lambda: session_ended(sftp), timeout=10)
        assert await kept.listdir("/")  # another token's session goes on
    rc, out, err = await env.batch("ls\n", token)
    assert rc != 0 and "Permission denied" in err


async def test_deleting_the_server_ends_its_sessions(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    async with await env.connect(token) as conn:
        sftp = await conn.start_sftp_client()
        assert await sftp.listdir("/") is not None
        status, body = await env.api.delete("/containers/srv")
        assert status in (200, 202, 204), body
        await wait_for(lambda: "srv" not in env.app[keys.SERVERS], timeout=30)
        await wait_for(lambda: session_ended(sftp), timeout=10)
    assert not env.app[keys.SFTP].connections or all(c.login is None for c in env.app[keys.SFTP].connections)


async def test_twenty_parallel_sessions(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    payloads = {i: os.urandom(256 * 1024 + i) for i in range(20)}

    async def one(i: int) -> bytes:
        async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open(f"/p{i}.bin", "wb") as f:
                await f.write(payloads[i])
            async with sftp.open(f"/p{i}.bin", "rb") as f:
                return await f.read()

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 120)
    assert all(results[i] == payloads[i] for i in range(20))
    assert all((env.volume / f"p{i}.bin").read_bytes() == payloads[i] for i in range(20))
    assert env.app[keys.SFTP].counts.count(f"token:{(await env.api.get('/auth/tokens'))[1]['tokens'][0]['id']}") == 0


@pytest.mark.parametrize("sftp_overrides", [{"max_sessions_per_user": 2}])
async def test_sessions_per_user_are_capped(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    async with await env.connect(token) as a, await env.connect(token) as b, await env.connect(token) as c:
        first, second = await a.start_sftp_client(), await b.start_sftp_client()
        with pytest.raises((asyncssh.Error, OSError, asyncio.TimeoutError)):
            await asyncio.wait_for(c.start_sftp_client(), 10)
        assert await first.listdir("/") is not None and await second.listdir("/") is not None


@pytest.mark.parametrize("sftp_overrides", [{"read_only_servers": ["srv"]}])
async def test_read_only_server(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    (env.volume / "keep.txt").write_text("keep")
    (env.local / "new.txt").write_text("new")
    rc, out, err = await env.batch("get keep.txt\n-put new.txt\n-rm keep.txt\n-mkdir d\n", token)
    assert rc == 0, err
    assert (env.local / "keep.txt").read_text() == "keep"
    assert err.count("Permission denied") == 3, err
    assert (env.volume / "keep.txt").exists() and not (env.volume / "new.txt").exists()


async def test_restoring_state_makes_sessions_read_only(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    server = env.app[keys.SERVERS].get("srv")
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/a.txt", "w") as f:
            await f.write("a")
            server.states.run = "restoring"  # what a restore of a backup holds (by name)
            try:
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="restoring"):
                    await f.write("b")
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.remove("/a.txt")
            finally:
                server.states.run = "offline"
        await sftp.remove("/a.txt")


@pytest.mark.parametrize("sftp_overrides", [{"login_failures_per_ip": 1000, "login_failures_per_user": 3}])
async def test_failed_logins_are_rate_limited(sftp_env: SftpEnv):
    env = sftp_env
    good, _ = await env.token()
    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            await env.connect("lightd_" + "w" * 40)
    # The username is now refused without checking, even with the right token...
    with pytest.raises(asyncssh.PermissionDenied):
        await env.connect(good)
    # ...while another username (another user of the same server) still logs in.
    async with await env.connect(good, user="other.srv") as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/") is not None


def test_failure_counter_policy_and_bounded_memory():
    now = [0.0]
    counter = FailureCounter(max_failures=2, window=60, tracked_max=100, clock=lambda: now[0])
    counter.fail("a")
    assert not counter.blocked("a")
    counter.fail("a")
    assert counter.blocked("a")
    now[0] = 61  # the window ended
    assert not counter.blocked("a")
    for i in range(10_000):  # an attacker spraying keys: memory stays bounded
        counter.fail(f"k{i}")
    assert len(counter) == 100


@pytest.fixture
async def sftp_panel() -> Any:
    """A panel answering POST /api/sftp/auth: `accept` maps a password to its answer."""
    seen: list[dict[str, Any]] = []
    accept: dict[str, dict[str, Any]] = {}

    async def auth(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({**body, "authorization": request.headers.get("Authorization")})
        answer = accept.get(body["password"])
        return web.json_response(answer) if answer else web.json_response({"error": "no"}, status=403)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": 200, "endpoint": "active"})

    app = web.Application()
    app.router.add_post("/api/sftp/auth", auth)
    app.router.add_post("/api/update", ok)
    app.router.add_get("/api/health", ok)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    yield server, seen, accept
    await server.close()


async def test_panel_login_flow(sftp_env: SftpEnv, sftp_panel: Any):
    env = sftp_env
    server, seen, accept = sftp_panel
    env.app[keys.SYNC].reload(env.app[keys.CONFIG].remote.model_copy(update={
        "enabled": True, "url": f"http://127.0.0.1:{server.port}/api", "token": REMOTE_TOKEN}))
    accept["hunter22"] = {"server": "srv", "user": "u-1", "permissions": ["file.read", "file.create"]}
    accept["viewer"] = {"server": "srv", "user": "u-2", "permissions": ["file.read"]}
    accept["elsewhere"] = {"server": "nosuch", "user": "u-3"}
    (env.local / "f.txt").write_text("f")
    rc, out, err = await env.batch("put f.txt\n", "hunter22", user="alice.srv")
    assert rc == 0, err
    assert (env.volume / "f.txt").read_text() == "f"
    assert seen[0]["username"] == "alice.srv" and seen[0]["password"] == "hunter22" and seen[0]["ip"] == "127.0.0.1"
    assert seen[0]["authorization"] == f"Bearer {REMOTE_TOKEN}"
    rc, out, err = await env.batch("get f.txt g.txt\n-rm f.txt\n", "viewer", user="bob.srv")
    assert rc == 0 and "Permission denied" in err, err
    assert (env.volume / "f.txt").exists()
    for password, user in (("wrong", "alice.srv"), ("elsewhere", "carol.srv")):
        rc, out, err = await env.batch("ls\n", password, user=user)
        assert rc != 0 and "Permission denied" in err


async def test_activity_reaches_remote_sync(sftp_env: SftpEnv, sftp_panel: Any):
    from lightd.sync import update_for
    from lightd.events import Event
    from lightd.servers.events import SftpActivity

    update = update_for(Event("event", "srv", SftpActivity("upload", "alice.srv", "127.0.0.1", ("a/b.txt",))))
    assert update is not None and update["status"] == "sftp_activity"
    assert update["data"] == {"action": "upload", "user": "alice.srv", "ip": "127.0.0.1", "paths": ["a/b.txt"]}


async def test_shutdown_closes_sessions(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    conn = await env.connect(token)
    sftp = await conn.start_sftp_client()
    await env.app[keys.SFTP].close()
    await wait_for(lambda: session_ended(sftp), timeout=10)
    conn.close()
