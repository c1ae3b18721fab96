"""Run the real daemon as a child process (so it can be killed with -9) and talk to it over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import VENDOR
from tests.panel import free_port

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    """`python -m lightd serve` on a free loopback port with the given config."""

    def __init__(self, tmp: Path, token: str, **config: Any) -> None:
        self.port = free_port()
        self.token = token
        self.config_path = tmp / "config.json"
        raw = {"token": token, "data_dir": str(tmp / "data"), "api": {"host": "127.0.0.1", "port": self.port}, **config}
        self.config_path.write_text(json.dumps(raw))
        self.log_path = tmp / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.headers = {"Authorization": f"Bearer {token}", "Accept": VENDOR}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightd", "--config", str(self.config_path), "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"daemon exited: {self.log_path.read_text()[-3000:]}")
                try:
                    async with session.get(self.url + "/api/v1/public/ping") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError("daemon did not answer")
                await asyncio.sleep(0.1)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None if it never ran)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return None if self.process is None else self.process.returncode

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers=self.headers) as session:
            async with session.request(method, self.url + path, **kwargs) as resp:
                body = await resp.json() if resp.content_type == "application/json" else await resp.read()
                return resp.status, body

    async def make_installed_server(self, internal_id: str, startup_command: str = "sleep 100") -> Path:
        """A server on a new volume, installed (not started); the volume's path on the host."""
        from tests.conftest import TEST_IMAGE, wait_for

        _, volume = await self.call("POST", "/volumes")
        status, body = await self.call("POST", "/containers", json={
            "internal_id": internal_id, "image": TEST_IMAGE, "volume_id": volume["volume_id"],
            "startup_command": startup_command})
        assert status == 202, body

        async def installed() -> bool:
            return (await self.call("GET", f"/containers/{internal_id}"))[1]["install_state"] == "ready"

        await wait_for(installed, timeout=60)
        return Path(volume["path"])
