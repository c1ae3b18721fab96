"""SFTP test fixtures: the real app with `sftp.enabled` on a free loopback port, a real server (container)
whose volume the sessions reach, tokens, OpenSSH's `sftp` in batch mode (password by `sshpass`) and an
asyncssh client."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from lightd import keys
from lightd.config import Config
from tests.conftest import Api
from tests.panel import free_port
from tests.servers.helpers import create_server

ROOT = Path(__file__).resolve().parents[2]
# BatchMode=no before -b (ssh keeps an option's first value): `sftp -b` turns password prompts off otherwise.
SSH_OPTIONS = ["-o", "BatchMode=no", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
               "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"]


@pytest.fixture(scope="session")
def openssh_tools() -> None:
    """OpenSSH's client and sshpass (scripts/setup-sftp.sh installs them when missing)."""
    if not (shutil.which("sftp") and shutil.which("sshpass")):
        result = subprocess.run(["bash", str(ROOT / "scripts" / "setup-sftp.sh")], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"OpenSSH tools not available: {result.stderr[-2000:]}")


def sftp_section(**overrides: Any) -> dict[str, Any]:
    return {"enabled": True, "host": "127.0.0.1", "port": free_port(), "max_sessions_per_user": 25,
            "login_failures_per_ip": 1000, "login_failures_per_user": 1000, **overrides}


@pytest.fixture
def sftp_overrides() -> dict[str, Any]:
    """What a test module changes in the `sftp` section (override this fixture)."""
    return {}


@pytest.fixture
def docker_config(make_config: Callable[..., Config], container_prefix: str, sftp_overrides: dict[str, Any],
                  openssh_tools: None) -> Config:
    return make_config(docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0},
                       sftp=sftp_section(**sftp_overrides))


class SftpEnv:
    """One daemon with SFTP on, and a ready server `srv` (its volume at `volume`)."""

    def __init__(self, api: Api, server_id: str, volume: Path, local: Path) -> None:
        self.api = api
        self.local = local
        """The client's own directory (where `put` reads and `get` writes)."""
        self.server_id = server_id
        self.volume = volume
        self.app = api.client.app
        self.port = self.app[keys.SFTP].port
        self.user = f"player.{server_id}"

    async def token(self, container: str | None = None, **fields: Any) -> tuple[str, str]:
        """A fresh sftp token for the server (or `container`): (token, id)."""
        body = {"purpose": "sftp", "container": container or self.server_id, **fields}
        status, answer = await self.api.post("/auth/tokens", json=body)
        assert status == 201, answer
        return answer["token"], answer["id"]

    async def batch(self, commands: str, password: str, *, user: str | None = None,
                    timeout: float = 60) -> tuple[int, str, str]:
        """OpenSSH's `sftp -b -` with `commands`; (exit code, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            "sshpass", "-e", "sftp", *SSH_OPTIONS, "-b", "-", "-P", str(self.port), f"{user or self.user}@127.0.0.1",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SSHPASS": password}, cwd=str(self.local))
        try:
            out, err = await asyncio.wait_for(proc.communicate(commands.encode()), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"sftp did not finish within {timeout}s: {commands!r}") from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def connect(self, password: str, *, user: str | None = None) -> asyncssh.SSHClientConnection:
        return await asyncio.wait_for(asyncssh.connect(
            "127.0.0.1", self.port, username=user or self.user, password=password, known_hosts=None,
            client_keys=None, agent_path=None, preferred_auth="password"), 20)


@pytest.fixture
async def sftp_env(dapi: Api, tmp_path: Path) -> SftpEnv:
    await create_server(dapi, "srv")
    server = dapi.client.app[keys.SERVERS].get("srv")
    local = tmp_path / "local"
    local.mkdir()
    return SftpEnv(dapi, "srv", server.volume_path, local)
