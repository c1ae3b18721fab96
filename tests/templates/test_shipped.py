"""Every template of `install-scripts/` installs and starts against a local HTTP server serving a stand-in of
its game (through the template's download-URL variables), reaches `running` on the real game's "done" line,
has its config files edited, and stops with the real stop command or signal."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from lightd import keys
from lightd.app import create_app
from lightd.templates.service import SHIPPED_DIR
from tests.conftest import Api
from tests.servers.helpers import wait_install, wait_state
from tests.templates.standins import (ArtifactServer, install_shims, port_and_volume, standin, steamcmd_tarball,
                                      tar_gz, template_config, zip_file)

MC_DONE = '[12:00:05] [Server thread/INFO]: Done (4.211s)! For help, type "help"'


@dataclass
class Case:
    files: Callable[[str], dict[str, bytes]]
    """Path -> artifact, given the server's URL."""
    variables: Callable[[str], dict[str, str]]
    done_line: str
    stopped: str
    """What the stand-in prints when the template's stop reaches it."""
    shims: tuple[str, ...] = ()
    checks: dict[str, str] = field(default_factory=dict)
    """File of the volume -> text it holds after the start (config-file edits)."""


def _mc(jar_path: str) -> dict[str, bytes]:
    return {jar_path: standin(MC_DONE, "stop")}


STOPPED, SIGNALLED = "stand-in: stopping", "stand-in: signal received, saving"
MC_CHECKS = {"server.properties": "server-port=25700", "eula.txt": "eula=true"}
CASES: dict[str, Case] = {
    "minecraft-vanilla": Case(
        lambda u: {"manifest.json": json.dumps({"latest": {"release": "1.21.1"}, "versions": [
            {"id": "1.21.2", "url": f"{u}/other.json"}, {"id": "1.21.1", "url": f"{u}/1.21.1.json"}]}).encode(),
            "1.21.1.json": json.dumps({"downloads": {"client": {"url": f"{u}/client.jar"},
                                                     "server": {"sha1": "0", "url": f"{u}/server.jar"}}}).encode(),
            **_mc("server.jar")},
        lambda u: {"MANIFEST_URL": f"{u}/manifest.json", "EULA": "true"}, MC_DONE, STOPPED, ("java",), MC_CHECKS),
    "minecraft-paper": Case(
        lambda u: {"paper": b'{"project_id": "paper", "versions": ["1.20.4", "1.21.1"]}',
                   "paper/versions/1.21.1/builds": b'{"builds": [{"build": 100}, {"build": 130}]}',
                   **_mc("paper/versions/1.21.1/builds/130/downloads/paper-1.21.1-130.jar")},
        lambda u: {"PAPER_API": f"{u}/paper", "MINECRAFT_VERSION": "1.21.1", "EULA": "true"}, MC_DONE, STOPPED,
        ("java",), MC_CHECKS),
    "minecraft-fabric": Case(
        lambda u: {"fabric/versions/game": b'[{"version": "24w14a", "stable": false}, {"version": "1.21.1", "stable": true}]',
                   "fabric/versions/loader": b'[{"separator": ".", "build": 1, "version": "0.16.5", "stable": true}]',
                   "fabric/versions/installer": b'[{"url": "x", "version": "1.0.1", "stable": true}]',
                   **_mc("fabric/versions/loader/1.21.1/0.16.5/1.0.1/server/jar")},
        lambda u: {"FABRIC_META": f"{u}/fabric", "EULA": "true"}, MC_DONE, STOPPED, ("java",), MC_CHECKS),
    "minecraft-bedrock": Case(
        lambda u: {"bedrock-server-1.21.44.01.zip": zip_file({
            "bedrock_server": standin("[2026-11-30 12:00:00:000 INFO] Server started.", "stop"),
            "server.properties": b"server-name=Dedicated Server\nserver-port=19132\n"})},
        lambda u: {"DOWNLOAD_BASE": u, "SERVER_NAME": "Test Realm"}, "[2026-11-30 12:00:00:000 INFO] Server started.",
        STOPPED, checks={"server.properties": "server-name=Test Realm\nserver-port=25700"}),
    "terraria": Case(
        lambda u: {"terraria-server-1449.zip": zip_file({"1449/Linux/TerrariaServer.bin.x86_64": standin(
            "Type 'help' for a list of commands.", "exit")})},
        lambda u: {"DOWNLOAD_BASE": u, "MAX_PLAYERS": "12"}, "Type 'help' for a list of commands.", STOPPED,
        checks={"serverconfig.txt": "port=25700\nmaxplayers=12"}),
    "tmodloader": Case(
        lambda u: {"v2024.10.3.0/tModLoader.zip": zip_file({"tModLoader.dll": standin("Server started", "exit")})},
        lambda u: {"DOWNLOAD_BASE": u}, "Server started", STOPPED, ("dotnet",), {"serverconfig.txt": "port=25700"}),
    "valheim": Case(
        lambda u: {"steamcmd.tar.gz": steamcmd_tarball({"valheim_server.x86_64": standin(
            "11/30/2026 12:00:09: Game server connected")})},
        lambda u: {"STEAMCMD_URL": f"{u}/steamcmd.tar.gz"}, "11/30/2026 12:00:09: Game server connected", SIGNALLED),
    "counter-strike-2": Case(
        lambda u: {"steamcmd.tar.gz": steamcmd_tarball({"game/bin/linuxsteamrt64/cs2": standin(
            "Connection to Steam servers successful.", "quit")})},
        lambda u: {"STEAMCMD_URL": f"{u}/steamcmd.tar.gz"}, "Connection to Steam servers successful.", STOPPED),
    "rust": Case(
        lambda u: {"steamcmd.tar.gz": steamcmd_tarball({"RustDedicated": standin("Server startup complete", "quit")})},
        lambda u: {"STEAMCMD_URL": f"{u}/steamcmd.tar.gz"}, "Server startup complete", STOPPED),
    "factorio": Case(
        lambda u: {"stable/headless/linux64": tar_gz({
            "factorio/bin/x64/factorio": standin("   1.204 Info ServerMultiplayerManager.cpp:808: Hosting game at IP ADDR:({0.0.0.0:25700})", "/quit"),
            "factorio/data/server-settings.example.json": b'{"name": "Name of the game", "max_players": 0, "visibility": {"public": true}}'},
            "w:xz")},
        lambda u: {"DOWNLOAD_BASE": u, "SERVER_NAME": "Factory", "MAX_PLAYERS": "4"},
        "Hosting game at IP ADDR:({0.0.0.0:25700})", STOPPED,
        checks={"data/server-settings.json": '"name": "Factory",\n    "max_players": 4'}),
    "steamcmd-generic": Case(
        lambda u: {"steamcmd.tar.gz": steamcmd_tarball({"start.sh": standin("generic server up")})},
        lambda u: {"STEAMCMD_URL": f"{u}/steamcmd.tar.gz", "SRCDS_APPID": "4020"}, "generic server up", SIGNALLED),
}
IMAGES = sorted({img for path in SHIPPED_DIR.glob("*.json") for t in [json.loads(path.read_text())]
                 for img in [*t["images"].values(), t["install"]["image"]]})


def test_every_shipped_template_has_a_case() -> None:
    assert sorted(p.stem for p in SHIPPED_DIR.glob("*.json")) == sorted(CASES)


@pytest.fixture
async def tapi(aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], container_prefix: str,
               auth_headers: dict[str, str], no_blocking_calls: None) -> Api:
    client = await aiohttp_client(create_app(template_config(make_config, container_prefix, IMAGES)))
    return Api(client, auth_headers)


@pytest.mark.parametrize("template_id", sorted(CASES))
async def test_shipped_template_installs_and_runs(tapi: Api, template_id: str) -> None:
    case = CASES[template_id]
    artifacts = ArtifactServer({})
    url = await artifacts.start()
    artifacts.files.update(case.files(url))
    try:
        status, template = await tapi.get(f"/templates/{template_id}")
        assert status == 200 and template["source"] == "shipped" and template["warnings"] == []
        port, volume_id = await port_and_volume(tapi, 25700)
        volume = tapi.client.app[keys.VOLUMES].path_of(volume_id)
        environment = install_shims(volume, case.shims) if case.shims else {}
        status, body = await tapi.post("/containers", json={
            "internal_id": template_id, "template": template_id, "variables": case.variables(url),
            "volume_id": volume_id, "ports": [port], "environment": environment,
            "limits": {"memory": 256 * 1024 * 1024}})
        assert status == 202, body
        await wait_install(tapi, template_id, "ready", timeout=90)
        assert set(artifacts.requests) <= set(artifacts.files) and artifacts.requests
        status, _ = await tapi.post(f"/containers/{template_id}/start")
        assert status == 202
        try:
            await wait_state(tapi, template_id, "running", timeout=30)
        except AssertionError:
            raise AssertionError((await tapi.get(f"/containers/{template_id}/logs"))[1]) from None
        for path, text in case.checks.items():
            assert text in (volume / path).read_text(), (path, (volume / path).read_text())
        status, _ = await tapi.post(f"/containers/{template_id}/stop", params={"timeout": "20"})
        await wait_state(tapi, template_id, "offline", timeout=40)
        lines = (await tapi.get(f"/containers/{template_id}/logs", params={"lines": "500"}))[1]["lines"]
        assert any(case.done_line in line for line in lines) and case.stopped in lines, lines
    finally:
        await artifacts.stop()
