"""The one error path (lightd/http_errors.py): each kind of failure reaches a front end's shape once, with
the status, `Allow` header, request id and log line decided in one place (issue 12, item 2)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from lightd.compat.base import CompatServices
from lightd.compat.serving import FRONT_ENDS
from lightd.errors import Conflict, LightdError, MethodNotAllowed, NotFound, PayloadTooLarge
from lightd.http_errors import ErrorAnswer, Failure, error_middleware

LIMIT = 64


def echo_shape(request: web.Request, failure: Failure) -> ErrorAnswer:
    """Everything the shape is given, for the test to look at."""
    return ErrorAnswer({"type": type(failure.error).__name__, "message": failure.error.message,
                        "origin": failure.origin.value, "reason": failure.reason, "request_id": failure.request_id},
                       headers={"X-Shape": "echo"})


async def conflict(request: web.Request) -> web.Response:
    raise Conflict("busy")


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("secret detail")


async def upload(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    app = web.Application(middlewares=[error_middleware(echo_shape, name="test", body_limit=lambda request: LIMIT,
                                                        request_id=lambda request: "rid-1")],
                          client_max_size=LIMIT)
    app.router.add_get("/conflict", conflict)
    app.router.add_get("/broken", broken)
    app.router.add_post("/upload", upload)
    return await aiohttp_client(app)


async def test_a_raised_error_keeps_its_status_and_class(client: Any) -> None:
    async with client.get("/conflict") as resp:
        assert resp.status == 409 and resp.headers["X-Shape"] == "echo"
        assert await resp.json() == {"type": "Conflict", "message": "busy", "origin": "raised", "reason": "Conflict",
                                     "request_id": "rid-1"}


async def test_aiohttp_answers_become_members_of_the_tree(client: Any) -> None:
    async with client.get("/nowhere") as resp:
        body = await resp.json()
        assert resp.status == 404 and body["type"] == NotFound.__name__ and body["origin"] == "http"
        assert body["reason"] == "Not Found"
    async with client.post("/conflict") as resp:
        body = await resp.json()
        assert resp.status == 405 and body["type"] == MethodNotAllowed.__name__
        assert "GET" in resp.headers["Allow"]
    async with client.post("/upload", data=b"x" * (LIMIT * 4)) as resp:
        body = await resp.json()
        assert resp.status == 413 and body["type"] == PayloadTooLarge.__name__
        assert body["message"] == f"request body is larger than the limit of {LIMIT} bytes"


async def test_an_unhandled_error_is_a_logged_500_without_its_detail(client: Any, caplog: Any) -> None:
    caplog.set_level(logging.ERROR)
    async with client.get("/broken") as resp:
        body = await resp.json()
        assert resp.status == 500 and body["type"] == LightdError.__name__ and body["origin"] == "unhandled"
        assert "secret detail" not in await resp.text()
    [record] = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert record.getMessage() == "test: unhandled error in GET /broken (request rid-1)"
    assert record.exc_info is not None


async def test_every_front_end_renders_errors_first(aiohttp_client: Any, config: Any) -> None:
    """serving.token_middleware goes just inside the error middleware, so a refusal is in the front end's
    own shape: that middleware must come first in every front end."""
    from lightd.app import create_app

    main = create_app(config)
    services = CompatServices(main)
    for spec in FRONT_ENDS:
        app = spec.application(spec.build(services))
        assert app.middlewares[0].__name__ == "render_errors", spec.name
