"""Eggs as published run unchanged against the real engine: imported over the API, installed in their
installer image (mapped to the local test image) with the volume at /mnt/server, started with their config
files edited, detected up by their done pattern, and stopped by their stop command or signal. Downloads come
from a local HTTP server through the eggs' own URL variables."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from lightd import keys
from lightd.app import create_app
from tests.conftest import Api, wait_for
from tests.servers.helpers import wait_install, wait_state
from tests.templates import eggs
from tests.templates.standins import (ArtifactServer, install_shims, port_and_volume, standin, steamcmd_tarball,
                                      template_config)

IMAGES = ["ghcr.io/pterodactyl/yolks:java_21", "ghcr.io/pterodactyl/yolks:java_17", "ghcr.io/pterodactyl/installers:alpine",
          "ghcr.io/pterodactyl/games:source", "ghcr.io/pterodactyl/installers:debian", "ghcr.io/pterodactyl/yolks:debian",
          "quay.io/pterodactyl/core:glibc", "alpine:3.4"]


@pytest.fixture
async def artifacts() -> Any:
    server = ArtifactServer({
        "paper-1.21.1-42.jar": standin(eggs.PAPER_DONE, "stop"),
        "steamcmd.tar.gz": steamcmd_tarball({
            "srcds_run": standin("Connection to Steam servers successful.", "quit"),
            "game/cfg/server.ini": b"; server settings\n[Network]\nPort = 27015\n\n[Game]\nMap = ctf_2fort\n"}),
        "gameserver": standin("Server listening on port 7777"),
        "settings.json": json.dumps({"server": {"port": 1, "name": "x"}, "worlds": {"a": {"max_players": 2},
                                                                                     "b": {"max_players": 3}}}).encode(),
        "voice_server": standin("Voice server ready", "end"),
    })
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def tapi(aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], container_prefix: str,
               auth_headers: dict[str, str], no_blocking_calls: None) -> Api:
    client = await aiohttp_client(create_app(template_config(make_config, container_prefix, IMAGES)))
    return Api(client, auth_headers)


async def _run(api: Api, egg: dict[str, Any], port: int, variables: dict[str, Any], *, shims: tuple[str, ...] = ()
               ) -> tuple[str, Any, dict[str, Any]]:
    """Import `egg`, create a server from it, install, start until its done pattern, stop; the volume path."""
    status, template = await api.post("/templates", json=egg)
    assert status == 201, template
    port_spec, volume_id = await port_and_volume(api, port)
    volume = api.client.app[keys.VOLUMES].path_of(volume_id)
    environment = install_shims(volume, shims) if shims else {}
    internal_id = f"egg-{template['id']}"
    status, body = await api.post("/containers", json={
        "internal_id": internal_id, "template": template["id"], "variables": variables, "volume_id": volume_id,
        "ports": [port_spec], "limits": {"memory": 512 * 1024 * 1024}, "environment": environment})
    assert status == 202, body
    assert body["template"]["id"] == template["id"]
    await wait_install(api, internal_id, "ready", timeout=90)
    status, _ = await api.post(f"/containers/{internal_id}/start")
    assert status == 202
    await wait_state(api, internal_id, "running", timeout=60)
    view = (await api.get(f"/containers/{internal_id}"))[1]
    status, _ = await api.post(f"/containers/{internal_id}/stop", params={"timeout": "20"})
    assert status == 202
    await wait_state(api, internal_id, "offline", timeout=40)
    return internal_id, volume, view


async def _console(api: Api, internal_id: str) -> list[str]:
    return (await api.get(f"/containers/{internal_id}/logs", params={"lines": "500"}))[1]["lines"]


async def test_paper_like_egg(tapi: Api, artifacts: ArtifactServer) -> None:
    internal_id, volume, view = await _run(tapi, eggs.paper_egg(), 25601, {
        "MINECRAFT_VERSION": "1.21.1", "BUILD_NUMBER": "42", "DOWNLOAD_URL": artifacts.url}, shims=("java",))
    assert "paper-1.21.1-42.jar" in artifacts.requests
    # Wings' properties parser at start: the allocated port, other keys kept.
    properties = (volume / "server.properties").read_text()
    assert "server-port=25601" in properties and "query.port=25601" in properties
    assert "server-ip=0.0.0.0" in properties and "motd=A Minecraft Server" in properties
    lines = await _console(tapi, internal_id)
    assert eggs.PAPER_DONE in lines and "stand-in: stopping" in lines  # the stop command "stop" was typed
    assert view["stop"] == {"type": "command", "value": "stop"}
    install_log = (await tapi.get(f"/containers/{internal_id}/install-log"))[1].decode()
    # The script ran in /mnt/server (CRLF endings normalised: ash would choke on them) with Wings' environment.
    assert "installed in /mnt/server as 0, memory 512, uuid " in install_log
    env = tapi.client.app[keys.SERVERS].get(internal_id).spec.environment
    assert env["TZ"] == "UTC" and len(env["P_SERVER_UUID"]) == 36 and env["MINECRAFT_VERSION"] == "1.21.1"


async def test_steamcmd_like_egg(tapi: Api, artifacts: ArtifactServer) -> None:
    internal_id, volume, _ = await _run(tapi, eggs.steamcmd_egg(), 25602, {
        "STEAMCMD_URL": f"{artifacts.url}/steamcmd.tar.gz", "SRCDS_MAP": "cp_badlands"})
    ini = (volume / "game/cfg/server.ini").read_text()
    assert "Port = 25602" in ini and "Map = cp_badlands" in ini and "Bind = 127.0.0.1" in ini
    assert ini.startswith("; server settings")
    lines = await _console(tapi, internal_id)
    assert "Connection to Steam servers successful." in lines and "stand-in: stopping" in lines


async def test_json_config_egg(tapi: Api, artifacts: ArtifactServer) -> None:
    internal_id, volume, view = await _run(tapi, eggs.json_game_egg(), 25603, {
        "DOWNLOAD_URL": artifacts.url, "MAX_PLAYERS": 20, "ADMIN_NAME": "alice"})
    settings = json.loads((volume / "config/settings.json").read_text())
    assert settings["server"] == {"port": 25603, "name": "x", "ip": "0.0.0.0"}
    assert settings["worlds"] == {"a": {"max_players": 20}, "b": {"max_players": 20}}
    assert settings["admin"] == {"name": "alice"}
    # SECURITY: template injection — only the listed placeholders resolve; the node token is never reachable.
    assert settings["secrets"]["node"] == "{{config.token}}"
    extra = yaml.safe_load((volume / "config/extra.yml").read_text())
    assert extra == {"network": {"port": 25603, "host": "172.17.0.1"}}
    assert view["stop"] == {"type": "signal", "value": "SIGINT"}  # "^C"
    assert "stand-in: signal received, saving" in await _console(tapi, internal_id)


async def test_v1_egg(tapi: Api, artifacts: ArtifactServer) -> None:
    internal_id, volume, _ = await _run(tapi, eggs.v1_egg(), 25604, {"DOWNLOAD_URL": artifacts.url, "SLOTS": "64"})
    assert (volume / "voice.ini").read_text() == "name=voice\nport=25604\n"
    lines = await _console(tapi, internal_id)
    assert "Voice server ready" in lines and "stand-in: stopping" in lines
    assert any("--slots=64" in line or "stand-in starting" in line for line in lines)


async def test_patch_variables_applies_at_next_start(tapi: Api, artifacts: ArtifactServer) -> None:
    internal_id, volume, _ = await _run(tapi, eggs.json_game_egg(), 25605, {"DOWNLOAD_URL": artifacts.url})
    status, body = await tapi.call("PATCH", f"/containers/{internal_id}", json={"variables": {"MAX_PLAYERS": 99}})
    assert status == 400 and body["error"].startswith("variables.MAX_PLAYERS:")  # between:1,64 applies again
    status, body = await tapi.call("PATCH", f"/containers/{internal_id}", json={"variables": {"MAX_PLAYERS": "33"}})
    assert status == 200, body
    assert body["container"]["template"]["variables"]["MAX_PLAYERS"] == "33"
    assert "environment" in body["on_next_start"]
    status, _ = await tapi.post(f"/containers/{internal_id}/start")
    await wait_state(tapi, internal_id, "running", timeout=60)
    await wait_for(lambda: json.loads((volume / "config/settings.json").read_text())["worlds"]["a"]["max_players"] == 33)
    status, _ = await tapi.post(f"/containers/{internal_id}/kill")
    await wait_state(tapi, internal_id, "offline")
