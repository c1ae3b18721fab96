"""The OpenAPI document is generated from the routes and models, and schemathesis finds no 5xx in it.

The schemathesis run drives a real daemon process (with the real Docker engine behind it) with generated
requests for every operation: valid and invalid bodies, queries and path parameters."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from openapi_spec_validator import validate

from lightd.app import create_app
from lightd.auth import PURPOSES
from lightd.api.middleware import VENDOR_MEDIA_TYPE
from lightd.api.openapi import build_document
from lightd.errors import ERROR_CODES
from tests.conftest import VENDOR, remove_containers
from tests.reliability.daemon import Daemon


async def test_document_lists_every_native_route(config):
    document = build_document(create_app(config))
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, method in [("/containers", "post"), ("/containers/{container_id}/start", "post"),
                         ("/volumes/{volume_id}/files", "post"), ("/network/ports/{ip}/{port}", "delete"),
                         ("/auth/tokens", "post"), ("/remote/config/reload", "post")]:
        assert method in paths[path], (path, method)
    create = paths["/containers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/ContainerSpec"}
    spec = document["components"]["schemas"]["ContainerSpec"]
    assert "internal_id" in spec["required"] and "start_pattern" in spec["properties"]
    assert paths["/api/v1/public/ping"]["get"]["security"] == []
    assert not any(p.startswith("/compat/") for p in paths)


async def test_document_is_valid_openapi_with_typed_answers(config):
    document = build_document(create_app(config))
    validate(document)  # openapi-spec-validator: raises on an invalid OpenAPI 3.1 document
    for path, item in document["paths"].items():
        for method, operation in item.items():
            success = {code: answer for code, answer in operation["responses"].items() if code < "400"}
            assert success, (method, path)
            for code, answer in success.items():
                for media, content in answer.get("content", {}).items():
                    assert content["schema"] != {"type": "object"}, f"{method} {path} {code} {media}: untyped answer"


async def test_errors_vendor_header_websocket_and_token_request_are_documented(config):
    document = build_document(create_app(config))
    schemas = document["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == list(ERROR_CODES)
    assert schemas["Error"]["required"] == ["error", "code", "details"]
    assert schemas["Error"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert "request_id" in schemas["InternalError"]["required"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, answer in operation["responses"].items():
                if code >= "400":
                    schema = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert schema == ("InternalError" if code == "500" else "Error"), (method, path, code)

    vendor = document["components"]["securitySchemes"]["vendor"]
    assert vendor["type"] == "apiKey" and vendor["in"] == "header" and vendor["name"] == "Accept"
    assert VENDOR_MEDIA_TYPE in vendor["description"]
    assert document["security"] == [{"bearer": [], "vendor": []}]
    assert document["paths"]["/system"]["get"].get("security") is None  # authenticated: both schemes

    socket = document["paths"]["/ws/{container_id}"]["get"]
    assert "101" in socket["responses"] and socket["security"] == []
    assert {p["name"] for p in socket["parameters"] if p["in"] == "query"} == {"token", "batch"}
    assert all(str(code) in socket["description"] for code in (4401, 4403, 4404, 4429))

    token = schemas["TokenRequest"]["properties"]
    assert token["purpose"]["enum"] == list(PURPOSES) and token["purpose"]["default"] == "all"
    bounds = next(o for o in token["ttl_seconds"]["anyOf"] if o["type"] == "integer")
    assert bounds["minimum"] == 1 and bounds["maximum"] == 86_400

    log = document["paths"]["/containers/{container_id}/install-log"]["get"]["responses"]["200"]["content"]
    assert log == {"text/plain": {"schema": {"type": "string"}}}
    content = document["paths"]["/volumes/{volume_id}/files/content"]["get"]["responses"]["200"]["content"]
    assert content == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


async def test_document_is_served(client):
    async with client.get("/openapi.json") as resp:
        assert resp.status == 200
        assert "/containers" in (await resp.json())["paths"]


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory: Any, docker_engine: str) -> Any:
    tmp = tmp_path_factory.mktemp("schemathesis")
    prefix = "lightdtest-schema-"
    daemon = Daemon(tmp, "lightd_" + "s" * 40, docker={"container_prefix": prefix})
    asyncio.run(daemon.start())
    yield daemon
    daemon.stop()
    remove_containers(prefix)


def test_schemathesis_finds_no_server_error(live_daemon: Daemon, tmp_path: Any) -> None:
    """schemathesis' CLI (not its pytest plugin, which is tied to pytest internals) against the live daemon."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", live_daemon.url + "/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "20", "--generation-database", "none", "--seed", "1", "--request-timeout", "30",
         "-H", f"Authorization: Bearer {live_daemon.token}", "-H", f"Accept: {VENDOR}", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its crash cache stays out of the tree
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()


async def test_document_is_built_once_and_served_with_an_etag(client, monkeypatch):
    """The route needs no token and building the document takes ~60 ms of the event loop: built per request,
    one client asking in a loop would stall every console of the node."""
    from lightd.api import openapi

    built = []
    real = openapi.build_document

    def counting(app):
        built.append(app)
        return real(app)

    monkeypatch.setattr(openapi, "build_document", counting)
    answers = []
    for _ in range(5):
        async with client.get("/openapi.json") as resp:
            assert resp.status == 200
            answers.append((await resp.json(), resp.headers["ETag"]))
    assert len(built) == 1 and all(a == answers[0] for a in answers)
    assert answers[0][0] == real(client.app)
    async with client.get("/openapi.json", headers={"If-None-Match": answers[0][1]}) as resp:
        assert resp.status == 304 and await resp.read() == b""
