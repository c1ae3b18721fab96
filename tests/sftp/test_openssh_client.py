"""OpenSSH's own `sftp` client (batch mode) against lightd's SFTP server: logins, every operation FileZilla
and WinSCP use, resume, and what the HTTP API sees of it."""

from __future__ import annotations

import asyncio
import os
import stat

from lightd import keys
from lightd.servers.events import SftpActivity
from tests.servers.helpers import EventLog, create_server
from tests.sftp.conftest import SftpEnv


async def test_login_and_every_operation(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    (env.local / "mod.jar").write_bytes(b"jar" * 1000)
    events = EventLog(env.app, "srv")
    rc, out, err = await env.batch(
        "pwd\n"
        "mkdir plugins\n"
        "cd plugins\n"
        "put mod.jar\n"
        "ls -l\n"
        "rename mod.jar renamed.jar\n"
        "chmod 640 renamed.jar\n"
        "get renamed.jar back.jar\n"
        "cd /\n"
        "mkdir empty\n"
        "rmdir empty\n"
        "put mod.jar gone.jar\n"
        "rm gone.jar\n"
        "ls\n", token)
    assert rc == 0, (out, err)
    assert "Remote working directory: /" in out
    assert "mod.jar" in out  # the listing
    plugin = env.volume / "plugins" / "renamed.jar"
    assert plugin.read_bytes() == b"jar" * 1000
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o640
    assert (env.local / "back.jar").read_bytes() == b"jar" * 1000
    assert not (env.volume / "empty").exists() and not (env.volume / "gone.jar").exists()
    # The HTTP API sees the same files at once.
    status, body = await env.api.get("/volumes/" + env.app[keys.SERVERS].get("srv").spec.volume_id + "/files",
                                     params={"path": "plugins"})
    assert status == 200 and [e["name"] for e in body["entries"]] == ["renamed.jar"]
    # Activity: login, uploads, deletes... as typed events (remote sync turns them into updates).
    actions = [e["action"] for e in events.of("event") if e["type"] == SftpActivity.TYPE]
    assert actions[0] == "login"
    for action in ("mkdir", "upload", "rename", "rmdir", "delete"):
        assert action in actions, actions
    events.close()


async def test_refused_logins(sftp_env: SftpEnv):
    env = sftp_env
    await create_server(env.api, "other")
    other_token, _ = await env.token("other")
    good, _ = await env.token()
    expired, _ = await env.token(ttl_seconds=1)
    status, answer = await env.api.post("/auth/tokens", json={"purpose": "all", "container": "srv"})
    all_token = answer["token"]
    status, answer = await env.api.post("/auth/tokens", json={"purpose": "sftp"})  # never unscoped
    assert status == 400 and answer["details"]["field"] == "container", answer
    cases = {
        "bad token": ("lightd_" + "x" * 40, env.user),
        "another server's token": (other_token, env.user),
        "an all-purpose token": (all_token, env.user),
        "the node token": (env.app[keys.CONFIG].token, env.user),
        "a username naming no server": (good, "player.nosuchserver"),
        "a username without a server": (good, "player"),
    }
    await asyncio.sleep(1.2)
    cases["an expired token"] = (expired, env.user)
    for what, (password, user) in cases.items():
        rc, out, err = await env.batch("ls\n", password, user=user)
        assert rc != 0, what
        assert "Permission denied" in err, (what, err)
    rc, out, err = await env.batch("ls\n", good)
    assert rc == 0, err


async def test_resume_with_reput_and_reget(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (env.local / "world.zip").write_bytes(data)
    (env.volume / "world.zip").write_bytes(data[: 1024 * 1024])  # an interrupted upload
    rc, out, err = await env.batch("reput world.zip\n", token)
    assert rc == 0, err
    assert (env.volume / "world.zip").read_bytes() == data
    (env.local / "copy.zip").write_bytes(data[:12345])  # an interrupted download
    rc, out, err = await env.batch("reget world.zip copy.zip\n", token)
    assert rc == 0, err
    assert (env.local / "copy.zip").read_bytes() == data


async def test_setstat_setuid_refused_and_times_kept(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    (env.local / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.utime(env.local / "run.sh", (1_600_000_000, 1_600_000_000))
    rc, out, err = await env.batch("put -p run.sh\n-chmod 4755 run.sh\n-chmod 2755 run.sh\nchmod 755 run.sh\n", token)
    assert rc == 0, err
    st = (env.volume / "run.sh").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755  # no setuid/setgid bit ever stored
    assert int(st.st_mtime) == 1_600_000_000  # put -p: times via setstat
    assert err.count("Permission denied") == 2, err
