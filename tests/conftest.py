"""Shared fixtures: a test config in a temporary data dir, the real app, and authenticated headers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lightd.app import create_app
from lightd.config import Config, generate_token

VENDOR = "Application/vnd.pkglatv1+json"


@pytest.fixture
def node_token() -> str:
    return generate_token()


@pytest.fixture
def make_config(tmp_path: Path, node_token: str) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        raw: dict[str, Any] = {"token": node_token, "data_dir": str(tmp_path / "data")}
        raw.update(overrides)
        return Config.model_validate(raw)

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def auth_headers(node_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {node_token}", "Accept": VENDOR}


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # asyncio's debug mode reports every callback that held the loop too long. Test code may block
        # (it runs docker CLI commands); lightd code, aiohttp and aiodocker must not.
        running = message.split(" created at ", 1)[0]  # where the callback runs, not where it was made
        if message.startswith("Executing") and " took " in message and "/tests/" not in running:
            self.messages.append(message)


@pytest.fixture
async def no_blocking_calls() -> Any:
    """Fails the test when something other than test code blocked the event loop for over 0.5 s."""
    loop = asyncio.get_running_loop()
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    previous = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.5
    # The test process keeps far more objects than a daemon (hundreds of apps' worth by the end of the
    # suite): a full collection of that heap stalled whatever callback ran for up to 0.9 s (measured with a
    # gc.callbacks probe: 675k objects after 272 tests), which is the test process's pause, not a blocking
    # call of lightd's. What exists before the test is moved out of the collector's reach while it runs.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        loop.set_debug(previous[0])
        loop.slow_callback_duration = previous[1]
        logger.removeHandler(handler)
    assert not handler.messages, "the event loop was blocked:\n" + "\n".join(handler.messages)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], config: Config, no_blocking_calls: None) -> TestClient:
    return await aiohttp_client(create_app(config))


class Api:
    """A thin authenticated helper over the test client: `await api.post(path, json=...)` -> (status, body)."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


@pytest.fixture
def api(client: TestClient, auth_headers: dict[str, str]) -> Api:
    return Api(client, auth_headers)


# -- real Docker engine --------------------------------------------------------------------------------
import secrets  # noqa: E402
import subprocess  # noqa: E402

TEST_IMAGE = "lightd-test/busybox:latest"
REGISTRY = "127.0.0.1:5055"


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The real engine, set up by scripts/setup-docker.sh (run here if the engine is not up yet)."""
    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode != 0:
        root = Path(__file__).resolve().parents[1]
        result = subprocess.run(["bash", str(root / "scripts" / "setup-docker.sh")], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"Docker engine not available: {result.stderr[-2000:]}")
    return TEST_IMAGE


def remove_containers(prefix: str) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=lightd.prefix={prefix}"], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


@pytest.fixture
def container_prefix(docker_engine: str) -> Any:
    """A unique container name prefix for one test; everything made under it is removed afterwards,
    also when the test fails."""
    prefix = f"lightdtest-{secrets.token_hex(3)}-"
    yield prefix
    remove_containers(prefix)


@pytest.fixture
def docker_config(make_config: Callable[..., Config], container_prefix: str) -> Config:
    return make_config(docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0})


@pytest.fixture
async def dclient(aiohttp_client: Callable[..., Any], docker_config: Config, no_blocking_calls: None) -> TestClient:
    return await aiohttp_client(create_app(docker_config))


@pytest.fixture
def dapi(dclient: TestClient, auth_headers: dict[str, str]) -> Api:
    return Api(dclient, auth_headers)


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def panel() -> Any:
    """A fake panel (remote-sync receiver) listening on 127.0.0.1."""
    from tests.panel import Panel

    receiver = Panel()
    await receiver.start()
    yield receiver
    await receiver.stop()
