"""The one fixture that serves a compat front end: the real app with the front end on its own port (the app
starts that listener itself, and stops it when its test client closes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from lightd.app import create_app
from tests.compat.helpers import FrontEndDaemon, free_port
from tests.conftest import Api

D = TypeVar("D", bound=FrontEndDaemon)


@pytest.fixture
async def serve_front_end(
    aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], auth_headers: dict[str, str],
    node_token: str, no_blocking_calls: None,
) -> AsyncIterator[Callable[..., Any]]:
    """`await serve_front_end(kind, name, settings, docker=..., bearer=False, **compat)`: a daemon whose
    config enables front end `name` on a free port with `settings` (and `compat` beside it), as a `kind`;
    its HTTP session sends the node token as a Bearer token when `bearer`."""
    daemons: list[FrontEndDaemon] = []

    async def serve(kind: type[D], name: str, settings: dict[str, Any] | None = None, *,
                    docker: dict[str, Any] | None = None, bearer: bool = False, **compat: Any) -> D:
        port = free_port()
        config = make_config(
            docker=docker or {},
            compat={name: {"enabled": True, "port": port, **(settings or {})}, **compat},
        )
        client = await aiohttp_client(create_app(config))
        headers = {"Authorization": f"Bearer {node_token}"} if bearer else None
        session = aiohttp.ClientSession(headers=headers)
        daemon = kind(f"http://127.0.0.1:{port}", session, Api(client, auth_headers), client, config, node_token)
        daemons.append(daemon)
        return daemon

    yield serve
    for daemon in daemons:
        await daemon.http.close()
