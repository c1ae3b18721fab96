"""`volume_mounts` against the real engine: other lightd volumes bound into a server's container at a target,
prepared before every start like its own volume (owner, setuid bits, links never followed), changed by
PATCH at the next start (the container recreated), refused targets, and a mounted volume kept from deletion."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lightd import keys
from tests.conftest import Api
from tests.servers.helpers import create_server, get, make_volume, wait_state


def inspect(name: str) -> dict[str, Any]:
    result = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


async def patch(api: Api, internal_id: str, body: Any) -> tuple[int, Any]:
    return await api.call("PATCH", f"/containers/{internal_id}", json=body)


async def power(api: Api, internal_id: str, action: str, state: str) -> None:
    status, body = await api.post(f"/containers/{internal_id}/{action}", params={"timeout": "10"} if action != "start" else None)
    assert status == 202, body
    await wait_state(api, internal_id, state)


async def run_in(dclient: Any, internal_id: str, *cmd: str) -> tuple[int, str]:
    return await dclient.app[keys.SERVERS].exec(internal_id, list(cmd))


def host_dir(dclient: Any, volume_id: str) -> Path:
    return dclient.app[keys.VOLUMES].path_of(volume_id)


async def test_a_mounted_volume_is_seen_at_its_target_and_prepared_like_the_own_volume(dapi, dclient, docker_config, tmp_path):
    extra = await make_volume(dapi)
    await create_server(dapi, "vm1", volume_mounts=[{"volume_id": extra, "target": "/mnt/extra"}])
    view = await get(dapi, "vm1")
    assert view["volume_mounts"] == [{"volume_id": extra, "target": "/mnt/extra", "read_only": False}]

    root = host_dir(dclient, extra)
    (root / "hello.txt").write_text("from the host")
    os.chmod(root / "hello.txt", 0o4755)  # setuid: cleared before the start, as in the server's own volume
    secret = tmp_path / "host-secret"
    secret.write_text("not the tenant's")
    before = secret.stat()
    os.symlink(secret, root / "escape")  # SECURITY: symlink escape — the chown walk must not follow it

    await power(dapi, "vm1", "start", "running")
    assert await run_in(dclient, "vm1", "cat", "/mnt/extra/hello.txt") == (0, "from the host")
    code, out = await run_in(dclient, "vm1", "sh", "-c", "echo written > /mnt/extra/back.txt && id -u")
    assert code == 0, out
    assert (root / "back.txt").read_text() == "written\n"  # read-write, as the server's user

    uid, gid = (int(x) for x in docker_config.docker.user.split(":"))
    st = (root / "hello.txt").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid) and not st.st_mode & stat.S_ISUID
    after = secret.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)

    name = f"{docker_config.docker.container_prefix}vm1"
    binds = inspect(name)["HostConfig"]["Binds"]
    assert f"{root}:/mnt/extra:rw" in binds


async def test_patch_adds_and_removes_a_mount_at_the_next_start(dapi, dclient, docker_config):
    extra = await make_volume(dapi)
    (host_dir(dclient, extra) / "seen.txt").write_text("yes")
    await create_server(dapi, "vm2")
    await power(dapi, "vm2", "start", "running")
    name = f"{docker_config.docker.container_prefix}vm2"
    first = inspect(name)["Id"]

    status, body = await patch(dapi, "vm2", {"volume_mounts": [{"volume_id": extra, "target": "/srv/data", "read_only": True}]})
    assert status == 200, body
    assert (body["applied"], body["on_next_start"]) == ([], ["volume_mounts"])
    assert body["container"]["volume_mounts"] == [{"volume_id": extra, "target": "/srv/data", "read_only": True}]
    assert inspect(name)["Id"] == first  # the running container is left as it is
    assert (await run_in(dclient, "vm2", "test", "-e", "/srv/data/seen.txt"))[0] != 0

    await power(dapi, "vm2", "restart", "running")
    second = inspect(name)["Id"]
    assert second != first  # recreated from the new spec
    assert await run_in(dclient, "vm2", "cat", "/srv/data/seen.txt") == (0, "yes")
    code, _ = await run_in(dclient, "vm2", "sh", "-c", "echo x > /srv/data/nope")
    assert code != 0  # read-only

    status, body = await patch(dapi, "vm2", {"volume_mounts": []})
    assert status == 200 and body["on_next_start"] == ["volume_mounts"], body
    assert await run_in(dclient, "vm2", "cat", "/srv/data/seen.txt") == (0, "yes")  # until the next start
    await power(dapi, "vm2", "stop", "offline")
    await power(dapi, "vm2", "start", "running")
    assert inspect(name)["Id"] != second
    assert (await run_in(dclient, "vm2", "test", "-e", "/srv/data/seen.txt"))[0] != 0

    status, body = await patch(dapi, "vm2", {"volume_mounts": []})  # no change: nothing waits
    assert status == 200 and body["on_next_start"] == [], body


async def test_bad_volume_mounts_are_refused_naming_the_field(dapi):
    extra, other = await make_volume(dapi), await make_volume(dapi)
    await create_server(dapi, "vm3", mount=[])
    own = (await get(dapi, "vm3"))["volume_id"]
    before = await get(dapi, "vm3")
    unknown = "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f"
    bad: list[Any] = [
        [{"volume_id": extra, "target": "relative/path"}],
        [{"volume_id": extra, "target": "/mnt/../etc"}],
        [{"volume_id": extra, "target": "/"}],
        [{"volume_id": extra, "target": "/home/container"}],
        [{"volume_id": extra, "target": "/home/container/sub"}],
        [{"volume_id": extra, "target": "/home"}],  # would hide the server's own volume
        [{"volume_id": extra, "target": "/proc/x"}],
        [{"volume_id": extra, "target": "/app/data"}],
        [{"volume_id": extra, "target": "/mnt/a:b"}],
        [{"volume_id": extra, "target": "/mnt/a"}, {"volume_id": other, "target": "/mnt/a/b"}],
        [{"volume_id": extra, "target": "/mnt/a"}, {"volume_id": extra, "target": "/mnt/b"}],
        [{"volume_id": own, "target": "/mnt/a"}],
        [{"volume_id": unknown, "target": "/mnt/a"}],
        [{"volume_id": "../../etc", "target": "/mnt/a"}],
        [{"volume_id": extra, "target": "/mnt/a", "extra": 1}],
        [{"volume_id": extra, "target": f"/mnt/{n}"} for n in range(11)],
        None,
    ]
    for mounts in bad:
        status, body = await patch(dapi, "vm3", {"volume_mounts": mounts})
        assert status == 400 and body["code"] == "validation_failed", (mounts, body)
        assert body["error"].startswith("volume_mounts"), (mounts, body)
    assert await get(dapi, "vm3") == before

    # at create too, and a refused create leaves nothing behind
    status, body = await dapi.post("/containers", json={
        "internal_id": "vm3b", "image": before["image"], "startup_command": "sleep 1000", "volume_id": other,
        "volume_mounts": [{"volume_id": unknown, "target": "/mnt/a"}]})
    assert status == 400 and body["error"].startswith("volume_mounts"), body
    assert (await dapi.get("/containers/vm3b"))[0] == 404


async def test_a_mounted_volume_cannot_be_deleted(dapi):
    extra = await make_volume(dapi)
    await create_server(dapi, "vm4", volume_mounts=[{"volume_id": extra, "target": "/mnt/extra"}])
    status, body = await dapi.delete(f"/volumes/{extra}")
    assert status == 409 and body["code"] == "volume_in_use", body
    status, listing = await dapi.get("/volumes", params={"state": "in_use"})
    assert status == 200 and any(v["volume_id"] == extra and v["containers"] == ["vm4"] for v in listing["volumes"]), listing

    status, body = await patch(dapi, "vm4", {"volume_mounts": []})
    assert status == 200, body
    status, body = await dapi.delete(f"/volumes/{extra}")
    assert status == 200, body
    # a server whose spec names a volume gone since (moved from another node) does not start: 409, saying why
    gone = await make_volume(dapi)
    status, body = await patch(dapi, "vm4", {"volume_mounts": [{"volume_id": gone, "target": "/mnt/gone"}]})
    assert status == 200, body
    server = dapi.client.app[keys.SERVERS].get("vm4")
    await dapi.client.app[keys.STORE].delete_volume(gone)  # as if never there: no record, nothing in use
    with pytest.raises(Exception) as failure:
        await dapi.client.app[keys.SERVERS].power_and_wait(server.id, "start")
    assert "does not exist" in str(failure.value)
