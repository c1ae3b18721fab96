"""Two lightd apps on loopback against the same engine: a source and a target, each with its own data_dir,
token, API port and container prefix (each prefix's containers are removed after the test)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lightd.app import create_app
from lightd.config import Config, generate_token
from tests.conftest import VENDOR, Api, remove_containers
from tests.panel import free_port


@dataclass
class Nodes:
    source: Api
    target: Api
    source_client: TestClient
    target_client: TestClient

    @property
    def target_url(self) -> str:
        return str(self.target_client.make_url("")).rstrip("/")


def node_config(root: Path, prefix: str, **overrides: Any) -> Config:
    raw: dict[str, Any] = {"token": generate_token(), "data_dir": str(root / "data"),
                           "api": {"host": "127.0.0.1", "port": free_port()},
                           "docker": {"container_prefix": prefix, "engine_poll_seconds": 1.0},
                           "transfers": {"min_free_bytes": 0, "stop_timeout_seconds": 3}}
    raw.update(overrides)
    return Config.model_validate(raw)


@pytest.fixture
def target_prefix(docker_engine: str) -> Any:
    prefix = f"lightdtest-{secrets.token_hex(3)}-"
    yield prefix
    remove_containers(prefix)


@pytest.fixture
def make_nodes(aiohttp_client: Callable[..., Any], tmp_path: Path, container_prefix: str, target_prefix: str,
               no_blocking_calls: None) -> Callable[..., Any]:
    async def make(source: dict[str, Any] | None = None, target: dict[str, Any] | None = None) -> Nodes:
        configs = (node_config(tmp_path / "source", container_prefix, **(source or {})),
                   node_config(tmp_path / "target", target_prefix, **(target or {})))
        clients = [await aiohttp_client(create_app(config)) for config in configs]
        apis = [Api(client, {"Authorization": f"Bearer {config.token}", "Accept": VENDOR})
                for client, config in zip(clients, configs, strict=True)]
        return Nodes(apis[0], apis[1], clients[0], clients[1])

    return make


@pytest.fixture
async def nodes(make_nodes: Callable[..., Any]) -> Nodes:
    return await make_nodes()
