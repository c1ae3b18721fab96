"""Eggs shaped as the public catalogue publishes them (JSON strings inside the JSON, CRLF scripts), written
here by the tests: a Paper-like Minecraft egg, a SteamCMD-like game, a game with a JSON config, and a v1 egg.
Their downloads come from `DOWNLOAD_URL`-style variables, pointed by the tests at a local HTTP server."""

from __future__ import annotations

import json
from typing import Any

PAPER_DONE = '[12:00:03 INFO]: Done (3.512s)! For help, type "help"'


def _crlf(script: str) -> str:
    return script.strip().replace("\n", "\r\n") + "\r\n"


def paper_egg() -> dict[str, Any]:
    return {
        "_comment": "DO NOT EDIT: FILE GENERATED AUTOMATICALLY BY PTERODACTYL PANEL - PTERODACTYL.IO",
        "meta": {"version": "PTDL_v2", "update_url": None},
        "exported_at": "2024-06-02T20:42:09+00:00",
        "name": "Paper",
        "author": "parker@pterodactyl.io",
        "description": "High performance Spigot fork that aims to fix gameplay and mechanics inconsistencies.",
        "features": ["eula", "java_version", "pid_limit"],
        "docker_images": {"Java 21": "ghcr.io/pterodactyl/yolks:java_21", "Java 17": "ghcr.io/pterodactyl/yolks:java_17"},
        "file_denylist": [],
        "startup": "java -Xms128M -Xmx{{SERVER_MEMORY}}M -Dterminal.jline=false -jar {{SERVER_JARFILE}}",
        "config": {
            "files": json.dumps({"server.properties": {"parser": "properties", "find": {
                "server-ip": "0.0.0.0", "server-port": "{{server.build.default.port}}",
                "query.port": "{{server.build.default.port}}"}}}, indent=4).replace("\n", "\r\n"),
            "startup": "{\r\n    \"done\": \")! For help, type \"\r\n}",
            "logs": "{}",
            "stop": "stop",
        },
        "scripts": {"installation": {
            "script": _crlf("""
#!/bin/ash
# Paper Installation Script
mkdir -p /mnt/server
cd /mnt/server
echo "fetching paper ${MINECRAFT_VERSION} build ${BUILD_NUMBER}"
wget -q -O ${SERVER_JARFILE} "${DOWNLOAD_URL}/paper-${MINECRAFT_VERSION}-${BUILD_NUMBER}.jar" || exit 1
if [ ! -f server.properties ]; then
    printf 'motd=A Minecraft Server\\nserver-port=25565\\nquery.port=25565\\n' > server.properties
fi
echo "installed in $(pwd) as $(id -u), memory ${SERVER_MEMORY}, uuid ${P_SERVER_UUID}"
"""),
            "container": "ghcr.io/pterodactyl/installers:alpine",
            "entrypoint": "ash",
        }},
        "variables": [
            {"name": "Minecraft Version", "description": "The version of minecraft to download.",
             "env_variable": "MINECRAFT_VERSION", "default_value": "latest", "user_viewable": True,
             "user_editable": True, "rules": "nullable|string|max:20", "field_type": "text"},
            {"name": "Server Jar File", "description": "The name of the server jarfile to run the server with.",
             "env_variable": "SERVER_JARFILE", "default_value": "server.jar", "user_viewable": True,
             "user_editable": True, "rules": "required|regex:/^([\\w\\d._-]+)(\\.jar)$/", "field_type": "text"},
            {"name": "Download Path", "description": "Where builds are downloaded from.",
             "env_variable": "DOWNLOAD_URL", "default_value": "https://api.papermc.io/v2/projects/paper",
             "user_viewable": False, "user_editable": False, "rules": "required|url", "field_type": "text"},
            {"name": "Build Number", "description": "The build number for the paper release.",
             "env_variable": "BUILD_NUMBER", "default_value": "latest", "user_viewable": True,
             "user_editable": True, "rules": "required|string|max:20", "field_type": "text"},
        ],
    }


def steamcmd_egg() -> dict[str, Any]:
    return {
        "_comment": "DO NOT EDIT: FILE GENERATED AUTOMATICALLY BY PTERODACTYL PANEL - PTERODACTYL.IO",
        "meta": {"version": "PTDL_v2", "update_url": None},
        "exported_at": "2024-01-10T10:00:00+00:00",
        "name": "Source Engine Game",
        "author": "support@pterodactyl.io",
        "description": "A generic SteamCMD game.",
        "features": ["steam_disk_space"],
        "docker_images": {"ghcr.io/pterodactyl/games:source": "ghcr.io/pterodactyl/games:source"},
        "file_denylist": ["srcds_linux"],
        "startup": "./srcds_run -game {{SRCDS_GAME}} -console -port {{SERVER_PORT}} +map {{SRCDS_MAP}} -strictportbind -norestart",
        "config": {
            "files": json.dumps({"game/cfg/server.ini": {"parser": "ini", "find": {
                "Network.Port": "{{server.build.default.port}}", "Network.Bind": "{{server.build.default.ip}}",
                "Game.Map": "{{server.build.env.SRCDS_MAP}}"}}}),
            "startup": json.dumps({"done": ["regex:^Connection to Steam servers successful", "gameserver Steam ID"]}),
            "logs": "{}",
            "stop": "quit",
        },
        "scripts": {"installation": {
            "script": _crlf("""
#!/bin/bash
# steamcmd Base Installation Script
cd /tmp
mkdir -p /mnt/server/steamcmd
wget -q -O steamcmd.tar.gz "${STEAMCMD_URL}" || exit 1
tar -xzf steamcmd.tar.gz -C /mnt/server/steamcmd
cd /mnt/server/steamcmd
./steamcmd.sh +force_install_dir /mnt/server +login anonymous +app_update ${SRCDS_APPID} validate +quit
mkdir -p /mnt/server/.steam/sdk32
echo "-------- Installation completed --------"
"""),
            "container": "ghcr.io/pterodactyl/installers:debian",
            "entrypoint": "bash",
        }},
        "variables": [
            {"name": "Game ID", "description": "The ID corresponding to the game to download and run using SRCDS.",
             "env_variable": "SRCDS_APPID", "default_value": "232250", "user_viewable": True, "user_editable": False,
             "rules": "required|regex:/^(\\d){1,6}$/", "field_type": "text"},
            {"name": "Game Name", "description": "The name corresponding to the game.", "env_variable": "SRCDS_GAME",
             "default_value": "tf", "user_viewable": True, "user_editable": False, "rules": "required|alpha_dash|between:1,100",
             "field_type": "text"},
            {"name": "Map", "description": "The default map for the server.", "env_variable": "SRCDS_MAP",
             "default_value": "cp_dustbowl", "user_viewable": True, "user_editable": True,
             "rules": "required|string|alpha_dash", "field_type": "text"},
            {"name": "SteamCMD", "description": "Where steamcmd is downloaded from.", "env_variable": "STEAMCMD_URL",
             "default_value": "https://steamcdn-a.akamaihd.net/client/installer/steamcmd_linux.tar.gz",
             "user_viewable": False, "user_editable": False, "rules": "required|string", "field_type": "text"},
        ],
    }


def json_game_egg() -> dict[str, Any]:
    return {
        "meta": {"version": "PTDL_v2", "update_url": None},
        "name": "JSON Config Game",
        "author": "games@example.com",
        "description": "A game whose settings are JSON and YAML.",
        "docker_images": {"Debian": "ghcr.io/pterodactyl/yolks:debian"},
        "file_denylist": [],
        "startup": "./gameserver --config config/settings.json --players {{MAX_PLAYERS}}",
        "config": {
            "files": json.dumps({
                "config/settings.json": {"parser": "json", "find": {
                    "server.port": "{{server.build.default.port}}", "server.ip": "0.0.0.0",
                    "worlds.*.max_players": "{{server.build.env.MAX_PLAYERS}}", "admin.name": "{{env.ADMIN_NAME}}",
                    "secrets.node": "{{config.token}}"}},
                "config/extra.yml": {"parser": "yaml", "find": {"network.port": "{{server.build.default.port}}",
                                                                "network.host": "{{config.docker.interface}}"}}}),
            "startup": json.dumps({"done": "regex:^Server listening on port [0-9]+$"}),
            "logs": json.dumps({"custom": False, "location": "logs/latest.log"}),
            "stop": "^C",
        },
        "scripts": {"installation": {
            "script": _crlf("""
#!/bin/bash
cd /mnt/server
mkdir -p config
wget -q -O gameserver "${DOWNLOAD_URL}/gameserver" || exit 1
chmod +x gameserver
wget -q -O config/settings.json "${DOWNLOAD_URL}/settings.json" || exit 1
"""),
            "container": "ghcr.io/pterodactyl/installers:debian",
            "entrypoint": "bash",
        }},
        "variables": [
            {"name": "Max players", "description": "", "env_variable": "MAX_PLAYERS", "default_value": "16",
             "user_viewable": True, "user_editable": True, "rules": "required|integer|between:1,64", "field_type": "text"},
            {"name": "Admin", "description": "", "env_variable": "ADMIN_NAME", "default_value": "admin",
             "user_viewable": True, "user_editable": True, "rules": "required|string|max:32", "field_type": "text"},
            {"name": "Download", "description": "", "env_variable": "DOWNLOAD_URL", "default_value": "https://example.com/game",
             "user_viewable": True, "user_editable": True, "rules": "required|url", "field_type": "text"},
        ],
    }


def v1_egg() -> dict[str, Any]:
    return {
        "_comment": "DO NOT EDIT: FILE GENERATED AUTOMATICALLY BY PTERODACTYL PANEL - PTERODACTYL.IO",
        "meta": {"version": "PTDL_v1"},
        "exported_at": "2019-12-21T13:01:35-05:00",
        "name": "Old Voice Server",
        "author": "support@pterodactyl.io",
        "description": "An egg from Panel 0.7.",
        "image": "quay.io/pterodactyl/core:glibc",
        "startup": "./voice_server --port={{SERVER_PORT}} --slots={{SLOTS}}",
        "config": {
            "files": "{\r\n    \"voice.ini\": {\r\n        \"parser\": \"file\",\r\n        \"find\": {\r\n            \"port=\": \"port={{server.build.default.port}}\"\r\n        }\r\n    }\r\n}",
            "startup": "{\r\n    \"done\": \"Voice server ready\",\r\n    \"userInteraction\": []\r\n}",
            "logs": "{\r\n    \"custom\": true,\r\n    \"location\": \"logs/voice.log\"\r\n}",
            "stop": "end",
        },
        "scripts": {"installation": {
            "script": _crlf("""
#!/bin/ash
cd /mnt/server
wget -q -O voice_server "${DOWNLOAD_URL}/voice_server" || exit 1
chmod +x voice_server
printf 'name=voice\\nport=9987\\n' > voice.ini
"""),
            "container": "alpine:3.4",
            "entrypoint": "ash",
        }},
        "variables": [
            {"name": "Slots", "description": "", "env_variable": "SLOTS", "default_value": "32", "user_viewable": 1,
             "user_editable": 1, "rules": "required|numeric|between:1,512"},
            {"name": "Download", "description": "", "env_variable": "DOWNLOAD_URL", "default_value": "https://example.com/voice",
             "user_viewable": 1, "user_editable": 1, "rules": "required|string"},
        ],
    }
