"""Templates without the engine: Laravel rules, Wings' parsers (and the attacks on them), egg import errors
naming the egg's field, the /templates routes, and creates and PATCHes refused before anything is made."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lightd.templates.config_files import ConfigFileError, Edit, apply, resolve
from lightd.templates.edits import edit_files
from lightd.templates.eggs import import_egg
from lightd.templates.fields import ConfigFile
from lightd.templates.rules import RuleError, parse_rules
from lightd.volumes.sandbox import Sandbox
from tests.conftest import Api
from tests.templates import eggs


@pytest.mark.parametrize(("rules", "value", "problem"), [
    ("required|string|max:20", "", "is required"),
    ("required|string|max:20", "x" * 21, "must be at most 20 characters"),
    ("nullable|string|max:20", "", None),
    ("required|in:a,b", "c", "must be one of a, b"),
    ("required|regex:/^([\\w\\d._-]+)(\\.jar)$/", "server.jar", None),
    ("required|regex:/^([\\w\\d._-]+)(\\.jar)$/", "server.zip", "does not match"),
    ("required|regex:/^(a|b)+$/i|max:4", "AbBa", None),
    ("required|integer|between:1,10", "11", "must be between 1 and 10"),
    ("required|integer", "1.5", "must be an integer"),
    ("required|numeric|max:2.5", "3", "must be at most 2.5"),
    ("required|boolean", "yes", "must be a boolean"),
    ("required|boolean", "true", None),
    ("required|alpha_dash", "ctf_2fort", None),
    (["required", "string", "max:3"], "abcd", "must be at most 3 characters"),  # Pelican's list form
])
def test_laravel_rules(rules: str, value: str, problem: str | None) -> None:
    found = parse_rules(rules).check(value)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found


def test_rules_report_unknown_and_refuse_unreadable() -> None:
    assert parse_rules("required|confirmed|string").unknown == ("confirmed",)
    for bad in ("max:x", "between:1", "regex:/(a)\\1/", "regex:abc"):
        with pytest.raises(RuleError):
            parse_rules(bad)


def test_placeholders_never_reach_the_daemon_config() -> None:
    values = {"server.build.default.port": "25565", "server.build.env.MOTD": "hi", "config.docker.interface": "172.17.0.1"}
    assert resolve("{{server.build.default.port}}/{{env.MOTD}}/{{ config.docker.interface }}", values) == "25565/hi/172.17.0.1"
    # SECURITY: template injection — config.* outside the table stays literal; unknown server.* is empty.
    assert resolve("{{config.token}}|{{server.build.nope}}", values) == "{{config.token}}|"


def _apply(parser: str, text: str, *edits: tuple[str, object] | tuple[str, object, str]) -> str:
    return apply(parser, text.encode(), [Edit(e[0], e[2] if len(e) > 2 else None, e[1]) for e in edits]).decode()


def test_parsers() -> None:
    props = _apply("properties", "#Minecraft\nmotd=Hé\nserver-port=1\n", ("server-port", "25565"), ("query.port", "25565"),
                   ("motd", "caf\u00e9"), ("pvp", "false", "true"))
    assert props == "#Minecraft\nmotd=caf\\u00e9\nserver-port=25565\nquery.port=25565\n"
    data = json.loads(_apply("json", '{"a": {"x": {"p": 1}, "y": {"p": 2}}, "l": [{"k": 1}]}',
                             ("a.*.p", "9"), ("b.c", True), ("l[0].k", "x"), ("a.x.p", "7", "9")))
    assert data == {"a": {"x": {"p": 7}, "y": {"p": 9}}, "l": [{"k": "x"}], "b": {"c": True}}
    assert _apply("yaml", "settings:\n  bungeecord: false\n", ("settings.bungeecord", True), ("new.port", "1")) == \
        "settings:\n  bungeecord: true\nnew:\n  port: 1\n"
    ini = _apply("ini", "top = 1\n[Server]\nPort = 1 ; c\nName=x\n", ("Server.Port", "2"), ("Other.Key", "v"), ("top", "3"))
    assert ini == "top = 3\n[Server]\nPort = 2\nName=x\n\n[Other]\nKey = v\n"
    xml = _apply("xml", "<Config><Net><Port>1</Port></Net><W/><W/></Config>", ("Config.Net.Port", "2"),
                 ("Config.Net.Bind", "[value='0.0.0.0']"), ("Config.W", "z"))
    assert "<Port>2</Port>" in xml and '<Bind value="0.0.0.0" />' in xml and xml.count("<W>z</W>") == 2
    assert _apply("file", "port=1\nname=x\n", ("port=", "port=2")) == "port=2\nname=x\n"
    with pytest.raises(ConfigFileError):
        _apply("xml", '<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', ("x", "1"))  # SECURITY: entity expansion
    with pytest.raises(ConfigFileError):
        _apply("json", "{not json", ("a", "1"))


def test_edits_follow_no_link_and_skip_huge_files(tmp_path: Path) -> None:
    volume, outside = tmp_path / "volume", tmp_path / "outside"
    volume.mkdir()
    outside.mkdir()
    (outside / "server.properties").write_text("secret=1\n")
    os.symlink(outside / "server.properties", volume / "server.properties")  # SECURITY: symlink escape
    os.symlink(outside, volume / "cfg")
    (volume / "big.json").write_bytes(b" " * 2048)
    files = [ConfigFile(file="server.properties", parser="properties", replace=[{"match": "a", "replace_with": "1"}]),
             ConfigFile(file="cfg/x.json", parser="json", replace=[{"match": "a", "replace_with": "1"}]),
             ConfigFile(file="big.json", parser="json", replace=[{"match": "a", "replace_with": "1"}]),
             ConfigFile(file="/new/made.yml", parser="yaml", replace=[{"match": "a.b", "replace_with": "{{server.build.memory}}"}])]
    with Sandbox(volume) as box:
        problems = edit_files(box, files, {"server.build.memory": "512"}, max_bytes=1024)
    assert len(problems) == 3 and "larger than 1024 bytes" in problems[2]
    assert (outside / "server.properties").read_text() == "secret=1\n" and not (outside / "x.json").exists()
    assert (volume / "new/made.yml").read_text() == "a:\n  b: 512\n"


def test_egg_import_names_the_bad_field() -> None:
    egg = eggs.paper_egg()
    egg["config"]["files"] = "{not json"
    with pytest.raises(Exception, match=r"^config.files: not valid JSON"):
        import_egg(egg)
    egg = eggs.paper_egg()
    egg["variables"][1]["env_variable"] = "BAD NAME"
    with pytest.raises(Exception, match=r"^variables.1.env_variable:"):
        import_egg(egg)
    egg = eggs.paper_egg()
    egg["docker_images"] = {"x": "Not An Image"}
    with pytest.raises(Exception, match=r"^docker_images: .*x: not a valid image"):
        import_egg(egg)
    egg = eggs.paper_egg()
    egg["variables"][0]["rules"] = "required|confirmed"
    assert import_egg(egg).warnings == ["variables.0.rules: unknown rule 'confirmed' is not enforced"]


async def test_templates_routes(api: Api) -> None:
    status, body = await api.get("/templates")
    assert status == 200 and "minecraft-paper" in [t["id"] for t in body["templates"]]
    status, body = await api.post("/templates", json=eggs.v1_egg(), params={"id": "voice"})
    assert status == 201 and body["id"] == "voice" and body["images"] == {"quay.io/pterodactyl/core:glibc": "quay.io/pterodactyl/core:glibc"}
    assert (await api.post("/templates", json=eggs.v1_egg(), params={"id": "voice"}))[0] == 409
    own = {**body, "id": "voice-own"}
    status, again = await api.post("/templates", json=own)  # lightd's own form, as GET shows it
    assert status == 201 and again["startup"] == body["startup"]
    bad = eggs.json_game_egg()
    bad["config"]["startup"] = '{"done": "regex:(a)\\\\1"}'
    status, error = await api.post("/templates", json=bad)
    assert status == 400 and error["error"].startswith("config.startup.done"), error
    assert (await api.delete("/templates/minecraft-paper"))[0] == 409  # shipped: a file, not deleted here
    assert (await api.delete("/templates/voice"))[0] == 200
    assert (await api.get("/templates/voice"))[0] == 404


async def test_stored_templates_survive_a_restart(aiohttp_client, config, auth_headers) -> None:  # type: ignore[no-untyped-def]
    from lightd.app import create_app

    first = Api(await aiohttp_client(create_app(config)), auth_headers)
    assert (await first.post("/templates", json=eggs.paper_egg()))[0] == 201
    await first.client.close()
    second = Api(await aiohttp_client(create_app(config)), auth_headers)
    status, body = await second.get("/templates/paper")
    assert status == 200 and body["source"] == "api"


@pytest.mark.parametrize(("extra", "field"), [
    ({"variables": {"NOPE": "1"}}, "variables.NOPE"),
    ({"variables": {"MINECRAFT_VERSION": "x" * 30}}, "variables.MINECRAFT_VERSION"),
    ({"variables": {"SERVER_JARFILE": "server.zip"}}, "variables.SERVER_JARFILE"),
    ({"image": "debian:12"}, "image"),
    ({"image_label": "Java 8"}, "image_label"),
    ({"template": "no-such-template"}, "template"),
    ({"internal_id": "bad id"}, "internal_id"),
])
async def test_create_from_template_refused(api: Api, extra: dict, field: str) -> None:  # type: ignore[type-arg]
    body = {"internal_id": "mc", "template": "minecraft-paper", "volume_id": "v", **extra}
    status, error = await api.post("/containers", json=body)
    assert status == 400 and error["error"].startswith(field), error
    assert (await api.get("/containers/mc"))[0] == 404
