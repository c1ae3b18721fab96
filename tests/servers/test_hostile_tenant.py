"""A hostile server against the host, on the real engine: symlinked mount sources (planted by another
server, or swapped between two starts), setuid files, create-time limits lightd used to leave to Docker,
and default limits for creates that name none (issue 10, items 1, 2, 10 and 11)."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightd import keys
from lightd.app import create_app
from lightd.config import Config
from tests.conftest import TEST_IMAGE, Api, wait_for
from tests.servers.helpers import EventLog, create_server, make_volume, wait_state

pytestmark = pytest.mark.docker

SERVER_UID = 988
# The tenant's shell: every console command is run by sh (a game server that runs what it is told).
TENANT_SHELL = "echo shell-ready; while read -r line; do sh -c \"$line\"; done"


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory outside pytest's 0700 tmp tree, readable by everyone (as /var/lib is on a host): what
    protects the volumes must be lightd's own permissions, not the test's."""
    root = Path(tempfile.mkdtemp(prefix="lightd-hostile-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def shared(open_root: Path) -> Path:
    """An allowed mount directory the servers can write to."""
    path = open_root / "shared"
    path.mkdir()
    os.chown(path, SERVER_UID, SERVER_UID)
    return path


@pytest.fixture
def host_secret(open_root: Path) -> tuple[Path, str]:
    """A host directory no server may see, with a unique marker in it."""
    path = open_root / "secret"
    path.mkdir()
    marker = "host-secret-" + secrets.token_hex(6)
    (path / "marker").write_text(marker + "\n")
    return path, marker


@pytest.fixture
async def hostile(aiohttp_client: Callable[..., Any], make_config: Callable[..., Config], container_prefix: str,
                  shared: Path, open_root: Path, auth_headers: dict[str, str], no_blocking_calls: None) -> Api:
    config = make_config(data_dir=str(open_root / "data"),
                         docker={"container_prefix": container_prefix, "allowed_mounts": [str(shared)]})
    client = await aiohttp_client(create_app(config))
    return Api(client, auth_headers)


def containers_of(prefix: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=lightd.prefix={prefix}"],
                          capture_output=True, text=True).stdout.split()


async def console_has(api: Api, internal_id: str, text: str) -> bool:
    status, body = await api.get(f"/containers/{internal_id}/logs?lines=200")
    assert status == 200, body
    return any(text in line for line in body["lines"]) if isinstance(body, dict) else False


async def tenant_shell(api: Api, internal_id: str, **fields: Any) -> None:
    await create_server(api, internal_id, startup_command=TENANT_SHELL, **fields)
    assert (await api.post(f"/containers/{internal_id}/start"))[0] == 202
    await wait_state(api, internal_id, "running")
    await wait_for(lambda: console_has(api, internal_id, "shell-ready"), timeout=20)


async def run_in(api: Api, internal_id: str, command: str) -> None:
    status, body = await api.post(f"/containers/{internal_id}/commands", json={"command": command})
    assert status in (200, 202, 204), body


# -- item 1: mount sources through links ---------------------------------------------------------------
async def test_a_link_planted_by_another_server_is_refused_as_a_mount_source(hostile, shared, container_prefix):
    await tenant_shell(hostile, "attacker", mount=[{"source": str(shared), "target": "/shared", "read_only": False}])
    await run_in(hostile, "attacker", "ln -sfn / /shared/hostroot")
    await wait_for(lambda: (shared / "hostroot").is_symlink(), timeout=15)

    volume = await make_volume(hostile)
    for source in (shared / "hostroot", shared / "hostroot" / "etc"):
        status, body = await hostile.post("/containers", json={
            "internal_id": "victim", "image": TEST_IMAGE, "volume_id": volume, "startup_command": "cat /h/shadow",
            "mount": [{"source": str(source), "target": "/h", "read_only": False}]})
        assert status == 400, body
        assert body["code"] == "validation_failed" and "symbolic link" in body["error"], body
    _, listing = await hostile.get("/containers")
    assert [c["internal_id"] for c in listing["containers"]] == ["attacker"]


async def test_a_source_swapped_for_a_link_between_starts_fails_the_next_start(hostile, shared, host_secret):
    secret, marker = host_secret
    await tenant_shell(hostile, "attacker", mount=[{"source": str(shared), "target": "/shared", "read_only": False}])
    real = shared / "real"
    real.mkdir()
    (real / "ok.txt").write_text("fine-contents\n")
    await create_server(hostile, "victim", startup_command="cat /mnt/x/*; sleep 1000",
                        mount=[{"source": str(real), "target": "/mnt/x"}])
    events = EventLog(hostile.client.app, "victim")
    assert (await hostile.post("/containers/victim/start"))[0] == 202
    await wait_for(lambda: console_has(hostile, "victim", "fine-contents"), timeout=20)
    assert (await hostile.post("/containers/victim/stop"))[0] == 202
    await wait_state(hostile, "victim", "offline")

    # The attacker swaps the directory the victim mounts for a link to a host directory.
    await run_in(hostile, "attacker", f"mv /shared/real /shared/real-old && ln -sfn {secret} /shared/real")
    await wait_for(lambda: real.is_symlink(), timeout=15)

    assert (await hostile.post("/containers/victim/start"))[0] == 202
    error = await events.wait("event", lambda d: d["type"] == "error" and d.get("action") == "start")
    assert "symbolic link" in error["message"]
    await wait_state(hostile, "victim", "offline")
    assert not await console_has(hostile, "victim", marker)
    events.close()


async def test_docker_binds_the_checked_directory_even_if_it_is_swapped_after_the_check(hostile, shared, host_secret):
    """The race between the check and Docker's mount: the pin binds the checked inode, so a swap right
    after the check (here: after Preflight, before the engine starts the container) changes nothing."""
    secret, marker = host_secret
    real = shared / "real"
    real.mkdir()
    (real / "ok.txt").write_text("fine-contents\n")
    await create_server(hostile, "victim", startup_command="sleep 1000", mount=[{"source": str(real), "target": "/mnt/x"}])
    server = hostile.client.app[keys.SERVERS].get("victim")
    await server.preflight.before_start(server)
    real.rename(shared / "real-old")
    real.symlink_to(secret)  # the tenant wins the race: the path now leads to the host directory
    await server.env.start("victim")
    code, listing = await server.env.exec("victim", ["ls", "/mnt/x"])
    assert code == 0 and "ok.txt" in listing and "marker" not in listing, listing
    code, listing = await server.env.exec("victim", ["cat", "/mnt/x/marker"])
    assert code != 0 and marker not in listing
    await hostile.post("/containers/victim/kill")


# -- item 2: setuid files --------------------------------------------------------------------------------
def elevated_files(root: Path) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(f"{name} {oct(st.st_mode)} uid={st.st_uid}")
    return found


def run_as_nobody(path: Path) -> subprocess.CompletedProcess[str] | OSError:
    """Run `path id -u` as uid/gid 65534 with no groups (setpriv keeps capabilities here that let it in)."""
    try:
        return subprocess.run([str(path), "id", "-u"], user=65534, group=65534, extra_groups=[],
                              capture_output=True, text=True, timeout=10)
    except OSError as exc:  # EACCES: the exec itself was refused
        return exc


async def test_servers_run_unprivileged_and_nothing_in_a_volume_runs_with_elevated_rights(hostile, open_root):
    install = "cp /bin/busybox /home/container/rootsh && chmod 4755 /home/container/rootsh"
    start = "id -u; cp /bin/busybox ./mine && chmod 6755 ./mine && echo planted; sleep 1000"
    await create_server(hostile, "suid", install_script=install, startup_command=start)
    volume = hostile.client.app[keys.SERVERS].get("suid").volume_path
    # The installer ran as root; the volume is the server's now, and its setuid file is not.
    assert os.stat(volume).st_uid == SERVER_UID
    assert os.stat(volume / "rootsh").st_uid == SERVER_UID
    assert elevated_files(volume) == []

    assert (await hostile.post("/containers/suid/start"))[0] == 202
    await wait_for(lambda: console_has(hostile, "suid", "planted"), timeout=20)
    assert await console_has(hostile, "suid", str(SERVER_UID))  # `id -u` in the server
    assert not await console_has(hostile, "suid", "\n0")

    # What the server made is at most setuid to its own unprivileged user, never root.
    assert all("uid=0" not in entry for entry in elevated_files(volume))
    data_dir = open_root / "data"
    for path in (data_dir, data_dir / "volumes"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert stat.S_IMODE(os.stat(data_dir / "lightd.db").st_mode) == 0o600
    # A local account cannot reach the volume at all, so no file there runs for it with anyone's rights.
    for name in ("mine", "rootsh"):
        result = run_as_nobody(volume / name)
        assert isinstance(result, OSError) or (result.returncode != 0 and result.stdout.strip() not in ("0", str(SERVER_UID))), result

    # The next start re-owns the volume and strips what the server set (Wings' permission check on boot).
    assert (await hostile.post("/containers/suid/restart"))[0] == 202
    await wait_for(lambda: not elevated_files(volume), timeout=30)
    await wait_state(hostile, "suid", "running")


# -- item 10: create-time validation ---------------------------------------------------------------------
@pytest.mark.parametrize("change, word", [
    ({"limits": {"memory": 2**63}}, "limits.memory"),
    ({"limits": {"memory": 2**64 + 5}}, "limits.memory"),
    ({"limits": {"cpu": 4096}}, "limits.cpu"),
    ({"limits": {"cpu": 1000}}, "limits.cpu"),
    ({"mount": [{"source": "/srv/x", "target": "/mnt/a:/etc"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/mnt/a\n/etc"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/home/container"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/proc"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/proc/sys"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/app/data"}]}, "target"),
    ({"mount": [{"source": "/srv/x", "target": "/mnt/a"}, {"source": "/srv/y", "target": "/mnt/a"}]}, "target"),
])
async def test_create_refuses_what_docker_would_refuse_and_records_nothing(hostile, container_prefix, change, word):
    volume = await make_volume(hostile)
    body = {"internal_id": "bad", "image": TEST_IMAGE, "volume_id": volume, "startup_command": "true", **change}
    status, answer = await hostile.post("/containers", json=body)
    assert status == 400, answer
    assert answer["code"] == "validation_failed" and word in answer["error"], answer
    assert (await hostile.get("/containers"))[1]["count"] == 0
    assert containers_of(container_prefix) == []


# -- item 11: default limits -----------------------------------------------------------------------------
async def test_creates_without_limits_get_the_configured_defaults(hostile, container_prefix):
    await create_server(hostile, "plain")
    _, view = await hostile.get("/containers/plain")
    assert view["limits"]["memory"] == 1024**3 and view["limits"]["cpu"] == 1.0
    doc = subprocess.run(["docker", "inspect", f"{container_prefix}plain", "--format",
                          "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.Config.User}}"],
                         capture_output=True, text=True).stdout.split()
    assert doc == [str(1024**3), str(10**9), "512", f"{SERVER_UID}:{SERVER_UID}"]
    # A create naming one limit keeps it and gets the defaults for the rest.
    await create_server(hostile, "some", limits={"memory": 64 * 1024 * 1024})
    _, view = await hostile.get("/containers/some")
    assert view["limits"]["memory"] == 64 * 1024 * 1024 and view["limits"]["cpu"] == 1.0


# -- item 6: a server's own writes over its disk limit ------------------------------------------------------
async def test_a_server_over_its_disk_limit_is_not_started_again(hostile):
    limit = 1024 * 1024
    await create_server(hostile, "filler", limits={"disk": limit},
                        startup_command="dd if=/dev/zero of=fill bs=1024 count=2048; echo filled; sleep 1000")
    events = EventLog(hostile.client.app, "filler")
    assert (await hostile.post("/containers/filler/start"))[0] == 202
    await wait_for(lambda: console_has(hostile, "filler", "filled"), timeout=20)
    _, stats = await hostile.get("/containers/filler/stats")
    assert stats["disk_limit_bytes"] == limit
    assert (await hostile.post("/containers/filler/kill"))[0] == 202
    await wait_state(hostile, "filler", "offline")

    assert (await hostile.post("/containers/filler/start"))[0] == 202
    error = await events.wait("event", lambda d: d["type"] == "error" and d.get("action") == "start")
    assert "disk limit" in error["message"]
    notice = await events.wait("daemon_message", lambda text: "disk space" in text)
    assert str(limit) in notice
    await wait_state(hostile, "filler", "offline")
    _, stats = await hostile.get("/containers/filler/stats")
    assert stats["disk_bytes"] > limit and stats["disk_limit_bytes"] == limit
    events.close()


async def test_compat_creates_get_the_same_mount_check(hostile, shared, container_prefix, node_token):
    (shared / "hostroot").symlink_to("/")
    headers = {"Authorization": f"Bearer {node_token}"}
    async with hostile.client.post("/compat/container-codes/api/containers", headers=headers, json={
            "name": "cc-escape", "image": TEST_IMAGE, "volumes": {"/data": str(shared / "hostroot")}}) as resp:
        body = await resp.json()
        assert resp.status == 400, body
        assert "symbolic link" in str(body)
    assert (await hostile.get("/containers"))[1]["count"] == 0
    assert containers_of(container_prefix) == []


async def test_compat_creates_without_limits_get_the_defaults(hostile, container_prefix, node_token):
    headers = {"Authorization": f"Bearer {node_token}"}
    async with hostile.client.post("/compat/container-codes/api/containers", headers=headers, json={
            "name": "cc-plain", "image": TEST_IMAGE, "command": "sleep 100", "start": False}) as resp:
        assert resp.status in (200, 201), await resp.text()
    doc = subprocess.run(["docker", "inspect", f"{container_prefix}cc-plain", "--format",
                          "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"],
                         capture_output=True, text=True).stdout.split()
    assert doc == [str(1024**3), str(10**9), "512"]


async def test_a_crash_restart_refused_by_the_disk_limit_is_reported_not_lost(hostile):
    limit = 1024 * 1024
    await create_server(hostile, "crasher", limits={"disk": limit}, restart_on_crash=True,
                        startup_command="dd if=/dev/zero of=fill bs=1024 count=2048; echo filled; exit 3")
    events = EventLog(hostile.client.app, "crasher")
    assert (await hostile.post("/containers/crasher/start"))[0] == 202
    await events.wait_type("crashed")
    error = await events.wait("event", lambda d: d["type"] == "error" and d.get("action") == "start")
    assert "disk limit" in error["message"]
    await events.wait("daemon_message", lambda text: text.startswith("start failed:"))
    await wait_state(hostile, "crasher", "offline")
    events.close()
