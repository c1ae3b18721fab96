"""/remote over HTTP: the masked config, live reload from config.json, status, auth."""

from __future__ import annotations

import json

import pytest

from lightd import keys
from lightd.app import create_app
from lightd.auth import mask_token
from lightd.servers.events import StateChanged
from tests.conftest import Api, wait_for
from tests.panel import REMOTE_TOKEN


def write(path, config) -> None:
    path.write_text(json.dumps(config.model_dump(mode="json")))


@pytest.fixture
def config_file(tmp_path):
    return tmp_path / "config.json"


async def remote_api(aiohttp_client, auth_headers, config, config_path=None) -> Api:
    return Api(await aiohttp_client(create_app(config, config_path=config_path)), auth_headers)


async def test_routes_need_the_node_token(aiohttp_client, make_config, auth_headers):
    api = await remote_api(aiohttp_client, auth_headers, make_config())
    for method, path in (("GET", "/remote/config"), ("POST", "/remote/config/reload"), ("GET", "/remote/status")):
        status, body = await api.call(method, path, headers={"Authorization": ""})
        assert status == 401, (path, body)


async def test_config_masks_the_token(aiohttp_client, make_config, auth_headers, panel):
    api = await remote_api(aiohttp_client, auth_headers, make_config(remote=panel.remote()))
    status, body = await api.get("/remote/config")
    assert status == 200
    assert body["token"] == mask_token(REMOTE_TOKEN) and REMOTE_TOKEN not in json.dumps(body)
    assert body["enabled"] is True and body["url"] == panel.url and body["retry_initial_seconds"] == 0.05


async def test_status(aiohttp_client, make_config, auth_headers, panel):
    api = await remote_api(aiohttp_client, auth_headers, make_config(remote=panel.remote()))
    api.client.app[keys.EVENTS].publish("event", "srv", StateChanged("running"))
    await wait_for(lambda: panel.updates, timeout=5)
    status, body = await api.get("/remote/status")
    assert status == 200
    assert set(body) >= {"enabled", "url", "queue_depth", "dropped", "last_error", "last_error_at",
                         "last_delivered_at", "panel_healthy"}
    assert body["enabled"] is True and body["queue_depth"] == 0 and body["last_delivered_at"]


async def test_reload_applies_a_changed_file(aiohttp_client, make_config, auth_headers, panel, config_file):
    config = make_config()  # remote disabled
    write(config_file, config)
    api = await remote_api(aiohttp_client, auth_headers, config, config_file)
    app = api.client.app
    app[keys.EVENTS].publish("event", "srv", StateChanged("starting"))
    status, body = await api.get("/remote/status")
    assert body["enabled"] is False and body["queue_depth"] == 0

    write(config_file, make_config(remote=panel.remote(token="lightd_rotated_token_987654")))
    status, body = await api.post("/remote/config/reload")
    assert status == 200, body
    assert body["remote"]["url"] == panel.url and body["remote"]["token"] == mask_token("lightd_rotated_token_987654")
    assert app[keys.CONFIG].remote.url == panel.url
    status, body = await api.get("/remote/config")
    assert body["enabled"] is True and body["url"] == panel.url
    # the reloaded service delivers with the new token
    app[keys.EVENTS].publish("event", "srv", StateChanged("running"))
    await wait_for(lambda: panel.updates, timeout=5)
    assert panel.statuses() == ["running"] and panel.auth == ["Bearer lightd_rotated_token_987654"]
    status, body = await api.get("/remote/status")
    assert body["enabled"] is True and body["url"] == panel.url


async def test_reload_rejects_an_invalid_file_and_keeps_the_old_config(
    aiohttp_client, make_config, auth_headers, panel, config_file
):
    config = make_config(remote=panel.remote())
    write(config_file, config)
    api = await remote_api(aiohttp_client, auth_headers, config, config_file)
    raw = config.model_dump(mode="json")
    raw["remote"]["retry_initial_seconds"] = -1
    raw["remote"]["url"] = "http://elsewhere.invalid"
    config_file.write_text(json.dumps(raw))
    status, body = await api.post("/remote/config/reload")
    assert status == 400 and "remote.retry_initial_seconds" in body["error"]
    config_file.write_text("{not json")
    status, body = await api.post("/remote/config/reload")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = await api.get("/remote/config")
    assert body["url"] == panel.url and body["retry_initial_seconds"] == 0.05
    assert api.client.app[keys.SYNC].config.url == panel.url


async def test_reload_without_a_config_file_is_a_conflict(aiohttp_client, make_config, auth_headers):
    api = await remote_api(aiohttp_client, auth_headers, make_config())
    status, body = await api.post("/remote/config/reload")
    assert status == 409 and "no config file" in body["error"]
