"""Shared fixtures: a test config in a temporary data dir, the real app, and authenticated headers."""

from __future__ import annotations

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


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], config: Config) -> TestClient:
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
