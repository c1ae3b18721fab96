"""The OpenAPI document says what the API really answers.

- Every native operation is called against the real app (real Docker engine behind it) and every answer, its
  errors too, is validated against the document: the response models forbid unknown fields, so a field added to
  an answer, removed from it or changed in type (a time that stops being RFC 3339) fails here.
- A client generated from the document by openapi-python-client drives create -> start -> stop -> delete."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator

from lightd import keys
from lightd.api.openapi import build_document
from lightd.app import create_app
from lightd.config import Config
from tests.api.contract_backups import backups_contract
from tests.api.contract_files import files_contract
from tests.api.contract_moves import (  # noqa: F401 - fixtures
    Node,
    second_node_fixture,
    second_prefix_fixture,
    transfers_contract,
)
from tests.api.contract_templates import templates_contract
from tests.api.contract_transfers import pulls_and_signed_urls, signed_backup_download
from tests.conftest import TEST_IMAGE, VENDOR, wait_for

_PARAM = re.compile(r"\{([^}]+)\}")
GENERATE_TIMEOUT_SECONDS = 120
STOP_BY_COMMAND = 'while read line; do echo "got $line"; if [ "$line" = stop ]; then exit 0; fi; done'


class Contract:
    """Calls the app by the document's path templates and validates each answer against the document."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.document = build_document(client.app)
        self.seen: set[tuple[str, str]] = set()

    async def call(self, method: str, template: str, expect: int, *, params: dict[str, str] | None = None,
                   json_body: Any = None, data: Any = None, headers: dict[str, str] | None = None,
                   **path: str) -> Any:
        url = _PARAM.sub(lambda m: path[m.group(1)], template)
        async with self.client.request(method, url, params=params, json=json_body, data=data,
                                       headers=self.headers if headers is None else headers) as resp:
            raw = await resp.read()
            status, media = resp.status, resp.content_type
        assert status == expect, (method, url, status, raw[:500])
        documented = self.document["paths"][template][method.lower()]["responses"]
        assert str(status) in documented, (method, template, status)
        content = documented[str(status)]["content"]
        assert media in content, (method, template, media, list(content))
        body: Any = json.loads(raw) if media == "application/json" else raw.decode() if media == "text/plain" else raw
        if content[media]["schema"].get("format") != "binary":  # a download (`string/binary`): any bytes
            self.validate(body, content[media]["schema"], f"{method} {template} {status}")
        if 200 <= status < 300:
            self.seen.add((method, template))
        return body

    def validate(self, body: Any, schema: dict[str, Any], where: str) -> None:
        rooted = {**schema, "components": self.document["components"]}
        errors = sorted(OAS31Validator(rooted, format_checker=OAS31Validator.FORMAT_CHECKER).iter_errors(body),
                        key=str)
        assert not errors, f"{where}: the answer does not match the document:\n" + "\n".join(
            f"- at {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}" for e in errors[:10])

    async def state(self, internal_id: str, key: str, value: str, timeout: float = 60) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            view = await self.call("GET", "/containers/{container_id}", 200, container_id=internal_id)
            if key == "install_state" and view["install_state"] == "failed":
                raise AssertionError(f"install failed: {view['install_error']}")
            return view if view[key] == value else None

        return await wait_for(check, timeout=timeout, interval=0.2)


@pytest.fixture
async def contract(aiohttp_client: Any, make_config: Any, container_prefix: str, auth_headers: dict[str, str],
                   panel: Any, tmp_path: Path, no_blocking_calls: None) -> Contract:
    config = make_config(docker={"container_prefix": container_prefix, "engine_poll_seconds": 1.0},
                         remote=panel.remote(), transfers={"min_free_bytes": 0, "stop_timeout_seconds": 3})
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json")))
    return Contract(await aiohttp_client(create_app(config, config_path=config_path)), auth_headers)


async def test_every_answer_matches_the_document(contract: Contract, node_token: str, second_node: Node) -> None:
    c = contract
    # -- public, node, remote sync
    await c.call("GET", "/api/v1/public/ping", 200, headers={})
    document = await c.call("GET", "/openapi.json", 200, headers={})
    assert document == c.document
    await c.call("GET", "/system", 200)
    await c.call("GET", "/remote/config", 200)
    await c.call("POST", "/remote/config/reload", 200)

    # -- port pool
    pool = "/network/ports/{ip}/{port}"
    for port in (40101, 40102, 40103):
        await c.call("POST", "/network/ports", 201, json_body={"ip": "127.0.0.1", "port": port})
    await c.call("GET", "/network/ports", 200, params={"protocol": "tcp"})
    await c.call("GET", "/network/ports/random", 200)
    await c.call("GET", pool, 200, ip="127.0.0.1", port="40101")
    await c.call("PUT", pool + "/use", 200, ip="127.0.0.1", port="40101")
    await c.call("PUT", pool + "/release", 200, ip="127.0.0.1", port="40101")
    await c.call("PUT", pool + "/use", 200, ip="127.0.0.1", port="40101")
    await c.call("DELETE", pool + "/use", 200, ip="127.0.0.1", port="40101")
    await c.call("POST", "/network/ports/bulk-delete", 200,
                 json_body={"ports": [{"ip": "127.0.0.1", "port": 40102}, {"ip": "127.0.0.1", "port": 40199}]})
    await c.call("DELETE", pool, 200, ip="127.0.0.1", port="40101")

    # -- temporary tokens
    minted = await c.call("POST", "/auth/tokens", 201, json_body={"purpose": "websocket", "ttl": "10m"})
    await c.call("GET", "/auth/tokens", 200)
    await c.call("DELETE", "/auth/tokens/{token_id}", 200, token_id=minted["id"])

    # -- volumes and files
    spare = (await c.call("POST", "/volumes", 201))["volume_id"]
    await c.call("DELETE", "/volumes/{volume_id}", 200, volume_id=spare)
    vol = (await c.call("POST", "/volumes", 201))["volume_id"]
    files = "/volumes/{volume_id}"
    await c.call("POST", files + "/files", 201, json_body={"path": "a/one.txt", "content": "hello"}, volume_id=vol)
    await c.call("POST", files + "/folders", 201, json_body={"path": "b"}, volume_id=vol)
    await c.call("POST", files + "/folders", 200, json_body={"path": "b"}, volume_id=vol)
    assert await c.call("GET", files + "/files/content", 200, params={"path": "a/one.txt"}, volume_id=vol) == b"hello"
    await c.call("POST", files + "/copy", 201, json_body={"source": "a", "destination": "c"}, volume_id=vol)
    await c.call("POST", files + "/rename", 200, json_body={"source": "c", "destination": "d"}, volume_id=vol)
    await c.call("POST", files + "/compress", 201, json_body={"paths": ["a"], "format": "zip",
                                                              "destination": "a.zip"}, volume_id=vol)
    await c.call("POST", files + "/decompress", 200, json_body={"path": "a.zip", "destination": "e"}, volume_id=vol)
    listing = await c.call("GET", files + "/files", 200, params={"path": ""}, volume_id=vol)
    assert {e["name"] for e in listing["entries"]} == {"a", "a.zip", "b", "d", "e"}
    await c.call("DELETE", files + "/files", 200, params={"path": "d"}, volume_id=vol)
    await c.call("GET", files, 200, volume_id=vol)
    await c.call("GET", files + "/usage", 200, volume_id=vol)
    await files_contract(c, vol)
    await pulls_and_signed_urls(c, vol)
    await templates_contract(c)

    # -- a server through every action, on the real engine
    one = "/containers/{container_id}"
    await c.call("POST", "/containers", 202, json_body={
        "internal_id": "doc", "image": TEST_IMAGE, "volume_id": vol, "startup_command": STOP_BY_COMMAND,
        "stop": {"type": "command", "value": "stop"}, "install_script": "echo installing\n",
        "ports": [{"ip": "127.0.0.1", "port": 40103}]})
    await c.state("doc", "install_state", "ready")
    await c.call("GET", "/volumes", 200)
    await c.call("GET", one + "/install-log", 200, container_id="doc")
    await c.call("PATCH", one, 200, json_body={"limits": {"memory": 64 * 1024 * 1024}}, container_id="doc")
    await c.call("POST", one + "/start", 202, container_id="doc")
    await c.state("doc", "state", "running")
    await c.call("POST", one + "/commands", 202, json_body={"command": "hello"}, container_id="doc")
    await wait_for(lambda: _has_line(c, "got hello"), timeout=20)
    await c.call("GET", one + "/stats", 200, container_id="doc")
    ws = await c.client.ws_connect(f"/ws/doc?token={node_token}&batch=1")
    assert "101" in c.document["paths"]["/ws/{container_id}"]["get"]["responses"]
    c.seen.add(("GET", "/ws/{container_id}"))
    await ws.close()
    await c.call("POST", one + "/pause", 202, container_id="doc")
    await c.state("doc", "state", "paused")
    await idle(c.client, "doc")
    await c.call("POST", one + "/unpause", 202, container_id="doc")
    await c.state("doc", "state", "running")
    await idle(c.client, "doc")
    await c.call("POST", one + "/restart", 202, container_id="doc")
    await idle(c.client, "doc")
    await c.state("doc", "state", "running")
    await c.call("POST", one + "/kill", 202, container_id="doc")
    await c.state("doc", "state", "offline")
    await idle(c.client, "doc")
    await c.call("POST", one + "/rebind-network", 202, json_body={"ports": []}, container_id="doc")
    await idle(c.client, "doc")
    await c.call("POST", one + "/reinstall", 202, json_body={}, container_id="doc")
    await c.state("doc", "install_state", "ready")
    await idle(c.client, "doc")
    await c.call("POST", one + "/start", 202, container_id="doc")
    await c.state("doc", "state", "running")
    await c.call("POST", one + "/stop", 202, params={"timeout": "20"}, container_id="doc")
    await c.state("doc", "state", "offline")
    await idle(c.client, "doc")
    await c.call("GET", "/containers", 200)  # the cached whole list
    await c.call("GET", "/containers", 200, params={"limit": "1", "state": "offline"})  # a page
    status = await wait_for(lambda: _delivered(c), timeout=20)  # the panel got updates: times are set
    assert status["last_delivered_at"] is not None
    await signed_backup_download(c, "doc")
    await backups_contract(c, "doc")
    assert "lightd_" in await c.call("GET", "/metrics", 200)  # Prometheus text
    await c.call("DELETE", one, 200, container_id="doc")
    await transfers_contract(c, second_node)  # receives `arrived` from the test, moves it on to a second node

    # -- errors: one shape, `code` from the enum
    missing = await c.call("GET", one, 404, container_id="nosuch")
    assert missing["code"] == "not_found"
    bad = await c.call("POST", "/auth/tokens", 400, json_body={"purpose": "root"})
    assert bad["code"] == "validation_failed" and bad["details"]["field"] == "purpose"
    assert (await c.call("GET", "/system", 401, headers={}))["code"] == "unauthorized"
    no_vendor = {"Authorization": c.headers["Authorization"]}
    assert (await c.call("GET", "/system", 403, headers=no_vendor))["code"] == "forbidden"

    operations = {(method.upper(), path) for path, item in c.document["paths"].items() for method in item}
    assert operations - c.seen == set(), "operations this test never called: add them, so their answers are checked"


async def idle(client: TestClient, internal_id: str) -> None:
    """Until the server's power lock is free (the background action it started has finished)."""
    server = client.app[keys.SERVERS].get(internal_id)
    await wait_for(lambda: not server.lock.locked, timeout=60, interval=0.1)


async def _has_line(c: Contract, line: str) -> bool:
    body = await c.call("GET", "/containers/{container_id}/logs", 200, params={"lines": "10"}, container_id="doc")
    return line in body["lines"]


async def _delivered(c: Contract) -> dict[str, Any] | None:
    status = await c.call("GET", "/remote/status", 200)
    return status if status["last_delivered_at"] is not None else None


# -- a generated client ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: Any) -> Any:
    """`lightd_client`, generated by openapi-python-client from the document, importable for this module."""
    tmp = tmp_path_factory.mktemp("generated")
    config = Config.model_validate({"token": "lightd_" + "g" * 30, "data_dir": str(tmp / "data")})
    (tmp / "openapi.json").write_text(json.dumps(build_document(create_app(config))))
    (tmp / "generator.yaml").write_text("post_hooks: []\npackage_name_override: lightd_client\ncontent_type_overrides:\n"
                                        "  application/gzip: application/octet-stream\n"  # an archive download
                                        "  application/zip: application/octet-stream\n")
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi.json", "--output-path", "lightd_client", "--meta", "none",
         "--config", "generator.yaml", "--fail-on-warning"],
        cwd=tmp, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sys.path.insert(0, str(tmp))
    try:
        yield importlib.import_module("lightd_client")
    finally:
        sys.path.remove(str(tmp))
        for name in [n for n in sys.modules if n == "lightd_client" or n.startswith("lightd_client.")]:
            del sys.modules[name]


async def test_a_generated_client_drives_a_server_through_its_life(generated_client: Any, dclient: TestClient,
                                                                   node_token: str, container_prefix: str) -> None:
    models = importlib.import_module("lightd_client.models")
    ops = {name: importlib.import_module(f"lightd_client.api.default.{name}") for name in (
        "post_create_volume", "post_create_container", "get_get_container", "post_start", "post_stop",
        "delete_delete_container", "get_list_containers")}
    # The vendor media type is the `vendor` security scheme: set once on the client, next to the token.
    client = generated_client.AuthenticatedClient(base_url=str(dclient.make_url("")), token=node_token,
                                                  headers={"Accept": VENDOR}, raise_on_unexpected_status=True)
    async with client:
        volume = await ops["post_create_volume"].asyncio(client=client)
        assert isinstance(volume, models.VolumeView), volume
        spec = models.ContainerSpec(internal_id="gen", image=TEST_IMAGE, volume_id=volume.volume_id,
                                    startup_command=STOP_BY_COMMAND,
                                    stop=models.StopConfig(type_=models.StopConfigType.COMMAND, value="stop"))
        created = await ops["post_create_container"].asyncio_detailed(client=client, body=spec)
        assert created.status_code == 202 and isinstance(created.parsed, models.ContainerCreated), created

        async def view() -> Any:
            answer = await ops["get_get_container"].asyncio("gen", client=client)
            assert isinstance(answer, models.ContainerView), answer
            return answer

        async def reaches(field: str, value: str) -> None:
            async def check() -> bool:
                return str((await view()).to_dict()[field]) == value
            await wait_for(check, timeout=60, interval=0.2)

        await reaches("install_state", "ready")
        started = await ops["post_start"].asyncio("gen", client=client)
        assert isinstance(started, models.Accepted) and started.internal_id == "gen", started
        await reaches("state", "running")
        listed = await ops["get_list_containers"].asyncio(client=client)
        assert isinstance(listed, models.ContainerList) and [s.internal_id for s in listed.containers] == ["gen"]
        stopped = await ops["post_stop"].asyncio("gen", client=client, timeout=20.0)
        assert isinstance(stopped, models.Accepted), stopped
        await reaches("state", "offline")
        assert (await view()).exit_code == 0
        await idle(dclient, "gen")
        deleted = await ops["delete_delete_container"].asyncio("gen", client=client)
        assert isinstance(deleted, models.Accepted), deleted
        gone = await ops["get_get_container"].asyncio_detailed("gen", client=client)
        assert gone.status_code == 404 and isinstance(gone.parsed, models.Error)
        assert gone.parsed.code == models.ErrorCode.NOT_FOUND
    assert await asyncio.to_thread(_containers_of, container_prefix) == []


def _containers_of(prefix: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=lightd.prefix={prefix}"],
                          capture_output=True, text=True, check=True).stdout.split()
