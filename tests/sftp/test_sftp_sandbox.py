"""A hostile tenant over SFTP: traversal, planted and swapped links, the disk limit mid-upload."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from lightd import keys
from tests.sftp.conftest import SftpEnv
from tests.volumes.helpers import make_outside


async def test_traversal_stays_in_the_volume(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    (env.volume / "inside.txt").write_text("inside")
    rc, out, err = await env.batch("cd ../../..\npwd\nls\n-get /etc/passwd\n-get ../../../../etc/passwd\n"
                                   "-ls /proc\nget /../../inside.txt\n", token)
    assert rc == 0, err
    assert "Remote working directory: /" in out  # ".." never climbs above the volume's root
    assert not (env.local / "passwd").exists()
    assert (env.local / "inside.txt").read_text() == "inside"
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.realpath("../../etc/..") == "/"
        assert await sftp.realpath("/a/../../b") == "/b"
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.stat("/etc/passwd")
        with pytest.raises((asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure)):
            await sftp.stat("a\x00b")


async def test_planted_links_are_never_followed_out(sftp_env: SftpEnv, tmp_path: Path):
    env = sftp_env
    token, _ = await env.token()
    outside = make_outside(tmp_path / "outside")
    (env.volume / "etc").symlink_to("/etc")
    (env.volume / "out").symlink_to(outside)
    (env.volume / "secret").symlink_to(outside / "sentinel.txt")
    (env.volume / "real.txt").write_text("real")
    (env.volume / "alias.txt").symlink_to("real.txt")  # a link inside the volume
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        names = {name for name in await sftp.listdir("/")}
        assert {"etc", "out", "secret", "alias.txt"} <= names
        assert (await sftp.lstat("/etc")).type == asyncssh.FILEXFER_TYPE_SYMLINK
        assert await sftp.readlink("/etc") == "/etc"
        # Followed inside the volume: /etc names the volume's own (missing) etc, never the host's.
        for path in ("/etc/passwd", "/out/sentinel.txt", "/out/sub/deep.txt"):
            with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
                async with sftp.open(path) as f:
                    await f.read()
        with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
            await sftp.listdir("/out")
        with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
            async with sftp.open("/secret") as f:
                await f.read()
        async with sftp.open("/alias.txt") as f:
            assert await f.read() == "real"
        # Writes never go through a link, setstat never reaches a target outside.
        for path in ("/secret", "/out/new.txt", "/etc/cron.d/x"):
            with pytest.raises(asyncssh.SFTPError):
                async with sftp.open(path, "w") as f:
                    await f.write("pwned")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.chmod("/secret", 0o777)
        with pytest.raises(asyncssh.SFTPError):
            await sftp.symlink("/", "/root-link")
        await sftp.remove("/secret")  # the link only
        await sftp.remove("/out")
    assert (outside / "sentinel.txt").read_text() == "do not touch"
    assert oct(os.stat(outside / "sentinel.txt").st_mode & 0o777) == oct(0o600)
    assert not (outside / "new.txt").exists() and not (env.volume / "root-link").exists()
    assert not os.path.lexists(env.volume / "secret") and (outside / "sub" / "deep.txt").exists()


async def test_directory_swapped_for_a_link_during_a_session(sftp_env: SftpEnv, tmp_path: Path):
    env = sftp_env
    token, _ = await env.token()
    outside = make_outside(tmp_path / "outside")
    (env.volume / "world").mkdir()
    (env.volume / "world" / "level.dat").write_text("level")
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/world")
        # The tenant swaps the directory for a link to a directory outside, mid-session.
        (env.volume / "world").rename(env.volume / "world.old")
        (env.volume / "world").symlink_to(outside)
        with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
            await sftp.listdir("/world/sub")
        with pytest.raises(asyncssh.SFTPError):
            async with sftp.open("/world/sentinel.txt", "w") as f:
                await f.write("x")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.remove("/world/sentinel.txt")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.rename("/world/sentinel.txt", "/stolen.txt")
    assert (outside / "sentinel.txt").read_text() == "do not touch"
    assert not (env.volume / "stolen.txt").exists()


async def test_disk_limit_mid_put_leaves_no_partial_file(sftp_env: SftpEnv):
    env = sftp_env
    token, _ = await env.token()
    volumes = env.app[keys.VOLUMES]
    volume_id = env.app[keys.SERVERS].get("srv").spec.volume_id
    (env.volume / "old.txt").write_bytes(b"o" * 1000)
    volumes.set_disk_limit(volume_id, 1)
    used = await volumes.usage_bytes(volume_id)
    volumes.set_disk_limit(volume_id, used + 2 * 1024 * 1024)
    (env.local / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    (env.local / "small.bin").write_bytes(b"s" * 1024 * 1024)
    rc, out, err = await env.batch("put big.bin\n", token)
    assert rc != 0 and 'write remote "/big.bin": Failure' in err, err  # OpenSSH prints no status text
    assert not (env.volume / "big.bin").exists()  # the upload this handle created is removed
    assert await volumes.usage_bytes(volume_id) == used  # everything it reserved was given back
    # Resume of a file that existed: cut back to its size at open, not removed.
    (env.volume / "resume.bin").write_bytes(b"r" * 1000)
    volumes.set_disk_limit(volume_id, 1)
    used = await volumes.usage_bytes(volume_id)
    volumes.set_disk_limit(volume_id, used + 2 * 1024 * 1024)
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/resume.bin", "ab") as f:
            await f.write(b"x" * 1024 * 1024)
            with pytest.raises(asyncssh.SFTPFailure, match="disk_quota_exceeded"):
                await f.write(b"x" * 3 * 1024 * 1024)
            with pytest.raises(asyncssh.SFTPFailure):  # the handle stays refused
                await f.write(b"x")
        assert (env.volume / "resume.bin").stat().st_size == 1000
        await sftp.put(str(env.local / "small.bin"), "/small.bin")  # what fits still goes in
    assert (env.volume / "small.bin").stat().st_size == 1024 * 1024
