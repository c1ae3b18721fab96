"""A template's `file_denylist` over SFTP: a server made from it shares the SFTP server's volume, so the
union applies to the open session; get, put, rm, rename and listing a denied folder are permission denied,
the root listing still shows the names, and deleting the denying server lifts it mid-session."""

from __future__ import annotations

import asyncssh
import pytest

from tests.sftp.conftest import SftpEnv
from tests.volumes.test_denylist import DENYLIST, add_template, create_from_template


async def test_sftp_refuses_denied_paths_of_a_shared_volume(sftp_env: SftpEnv):
    env, api = sftp_env, sftp_env.api
    token, _ = await env.token()
    for name, text in {"secret.txt": "s", "ok.txt": "ok", "private/inner.txt": "p", "world/x.key": "k"}.items():
        (env.volume / name).parent.mkdir(parents=True, exist_ok=True)
        (env.volume / name).write_text(text)
    (env.local / "up.txt").write_text("up")
    async with await env.connect(token) as conn, conn.start_sftp_client() as sftp:
        status, body = await api.get("/containers/srv")
        assert status == 200, body
        await add_template(api, "denying", DENYLIST)
        await create_from_template(api, "denier", "denying", body["volume_id"])  # while the session is open
        denied = (asyncssh.SFTPPermissionDenied,)
        for path in ("/secret.txt", "secret.txt", "/./private//inner.txt", "/world/x.key", "/a/../secret.txt"):
            with pytest.raises(denied):
                await sftp.get(path, str(env.local / "got"))
            with pytest.raises(denied):
                await sftp.put(str(env.local / "up.txt"), path)
            with pytest.raises(denied):
                await sftp.remove(path)
            with pytest.raises(denied):
                await sftp.rename("/ok.txt", path)
        with pytest.raises(denied):
            await sftp.listdir("/private")
        with pytest.raises(denied):
            await sftp.rename("/world", "/w2")  # holds world/x.key
        with pytest.raises(denied):
            await sftp.chmod("/secret.txt", 0o600)
        assert {"secret.txt", "private"} <= set(await sftp.listdir("/"))
        await sftp.get("/ok.txt", str(env.local / "ok.txt"))
        assert (env.local / "ok.txt").read_text() == "ok"
        assert (env.volume / "secret.txt").read_text() == "s" and (env.volume / "private" / "inner.txt").exists()

        assert (await api.delete("/containers/denier"))[0] == 200  # lifted for the open session too
        await sftp.get("/secret.txt", str(env.local / "secret.txt"))
        assert (env.local / "secret.txt").read_text() == "s"

    rc, _, err = await env.batch("get world/x.key\n", token)  # OpenSSH's client too, once lifted
    assert rc == 0, err
