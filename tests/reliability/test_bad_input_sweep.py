"""Bad input over every route of the native API, enumerated from the app's router (a new route is swept
automatically): malformed and wrongly typed bodies, wrong field types (derived from each route's declared
pydantic model), hostile path parameters and query strings, oversized bodies, unicode and NUL in names, path
traversal, symbolic links planted in a volume used on every side of every file route, zip-slip and archive
bombs, and refused container creates. Always a 4xx with the `{"error": ...}` shape (never a 5xx, never a
2xx for a bad input), nothing written outside a volume, nothing half-created."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import tarfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lightd.app import create_app
from lightd.config import Config, generate_token
from tests.conftest import TEST_IMAGE, Api, wait_for
from tests.reliability.sweep_helpers import docker_names, route_params, tree
from tests.servers.helpers import create_server, make_volume, wait_install

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(170)]

_PARAM = re.compile(r"\{([^}:]+)\}")


def native_routes() -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every native route: the router minus HEAD and /compat/."""
    app = create_app(Config(token=generate_token(), data_dir=Path("/nonexistent-lightd-sweep")))
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method in ("HEAD", "*") or path.startswith("/compat/"):
            continue
        found.append((route.method, path, route.handler))
    return found


ROUTES = native_routes()
BODY_METHODS = ("POST", "PUT", "DELETE", "PATCH")


def meta(handler: Any) -> dict[str, Any]:
    return getattr(handler, "__openapi__", {}) or {}


def fill(path: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: urllib.parse.quote(values[m.group(1)], safe=""), path)


def problem(status: int, body: Any, *, allow_2xx: bool = False) -> str | None:
    """What is wrong with an answer to a bad input, or None."""
    if status >= 500:
        return f"{status} (server error): {body!r:.200}"
    if 200 <= status < 300:
        return None if allow_2xx else f"{status} (accepted a bad input): {body!r:.200}"
    if not (400 <= status < 500):
        return f"unexpected status {status}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"{status} without the {{'error': ...}} shape: {body!r:.200}"
    return None


class World:
    """What the routes act on: a volume with files, a port in the pool, an installed (offline) container."""

    def __init__(self, api: Api, volume_id: str, volume: Path, container: str) -> None:
        self.api = api
        self.volume_id = volume_id
        self.volume = volume
        self.container = container
        self.params = route_params(volume_id, container)


@pytest.fixture
async def world(dapi: Api) -> World:
    status, body = await dapi.post("/volumes")
    assert status == 201, body
    volume_id, volume = body["volume_id"], Path(body["path"])
    (volume / "a.txt").write_text("hello")
    (volume / "dir").mkdir()
    (volume / "dir" / "inner.txt").write_text("inner")
    status, body = await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": 40001})
    assert status == 201, body
    await create_server(dapi, "victim", volume_id=(await make_volume(dapi)))
    return World(dapi, volume_id, volume, "victim")


async def state_of(world: World) -> tuple[Any, ...]:
    """Everything a refused request must leave alone."""
    _, containers = await world.api.get("/containers")
    _, ports = await world.api.get("/network/ports")
    _, volumes = await world.api.get("/volumes")
    return (sorted((c["internal_id"], c["install_state"], c["state"]) for c in containers["containers"]),
            sorted((p["ip"], p["port"], p["protocol"], p["in_use"], p["container"]) for p in ports["ports"]),
            sorted(v["volume_id"] for v in volumes["volumes"]), tree(world.volume))


# -- 1. bodies -------------------------------------------------------------------------------------------
BAD_BODIES: list[tuple[str, bytes]] = [
    ("truncated", b'{"path": "a'),
    ("not json", b"path=a&content=b"),
    ("invalid utf-8", b'{"path": "\xff\xfe"}'),
    ("array", b"[]"),
    ("array of object", b'[{"path": "a"}]'),
    ("string", b'"hello"'),
    ("number", b"42"),
    ("null", b"null"),
    ("true", b"true"),
    ("deep nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("trailing garbage", b'{"path": "a"} {"path": "b"}'),
    ("NaN", b'{"path": NaN}'),
    ("lone surrogate key", b'{"\\ud800": 1}'),
    ("nul key", b'{"\\u0000": 1}'),
]


async def test_every_route_answers_malformed_and_wrongly_typed_bodies_with_4xx(world):
    before = await state_of(world)
    # Routes that declare no body ignore it and act: point them at things that do not exist.
    throwaway = route_params(port="40099")
    failures = []
    swept = 0
    for method, path, handler in ROUTES:
        if method not in BODY_METHODS:
            continue
        declared = meta(handler).get("body") is not None
        url = fill(path, world.params if declared else throwaway)
        for name, raw in BAD_BODIES:
            status, body = await world.api.call(method, url, data=raw, headers={"Content-Type": "application/json"})
            swept += 1
            # a route that declares no body ignores it: any non-5xx answer with the error shape on 4xx
            issue = problem(status, body, allow_2xx=not declared)
            if issue:
                failures.append(f"{method} {path} [{name}]: {issue}")
    assert swept > 100
    assert not failures, "\n".join(failures)
    after = await state_of(world)
    # routes without a body may legitimately act (POST /volumes makes volumes): compare the rest
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]


def _field_types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    types: set[str] = set()
    for option in options:
        if "$ref" in option:
            option = defs[option["$ref"].rsplit("/", 1)[-1]]
        if "enum" in option or "const" in option:
            types.add("enum")
        elif "type" in option:
            types.update([option["type"]] if isinstance(option["type"], str) else option["type"])
        elif "properties" in option:
            types.add("object")
    return types


WRONG_BY_TYPE: dict[str, list[Any]] = {
    "string": [123, 1.5, True, [], {}, ["a"]],
    "integer": ["abc", 1.5, [], {}, "1e999"],
    "number": ["abc", [], {}, "nan-ish"],
    "boolean": ["maybe", 2, [], {}],
    "array": ["x", 1, {}, True],
    "object": ["x", 1, [], True],
    "enum": ["not-a-choice", 12345, [], {}],
}

BASE_BODIES: dict[str, dict[str, Any]] = {
    "WriteFile": {"path": "new.txt", "content": "x"},
    "PathBody": {"path": "newdir"},
    "Move": {"source": "a.txt", "destination": "moved.txt"},
    "Compress": {"paths": ["a.txt"], "format": "zip", "destination": "new.zip"},
    "Decompress": {"path": "missing.zip"},
    "PortSpec": {"ip": "127.0.0.1", "port": 40002},
    "BulkDelete": {"ports": [{"ip": "127.0.0.1", "port": 40003}]},
    "TokenRequest": {"purpose": "api"},
    "ContainerSpec": {"internal_id": "sweep-new", "image": TEST_IMAGE, "startup_command": "sleep 1"},
    "ReinstallRequest": {},
    "RebindRequest": {"ports": []},
    "CommandRequest": {"command": "say hi"},
}


async def test_every_declared_body_field_refuses_wrong_types(world, container_prefix):
    before = await state_of(world)
    failures, swept = [], 0
    for method, path, handler in ROUTES:
        model = meta(handler).get("body")
        if model is None:
            continue
        schema = model.model_json_schema(mode="validation")
        defs = schema.get("$defs", {})
        base = dict(BASE_BODIES.get(model.__name__, {}))
        if model.__name__ == "ContainerSpec":
            base["volume_id"] = world.volume_id
        url = fill(path, world.params)
        for field, prop in schema.get("properties", {}).items():
            types = _field_types(prop, defs)
            wrong: list[Any] = []
            for kind in types:
                wrong += [v for v in WRONG_BY_TYPE.get(kind, []) if not _fits(v, types)]
            for value in wrong:
                status, body = await world.api.call(method, url, json={**base, field: value})
                swept += 1
                issue = problem(status, body)
                if issue:
                    failures.append(f"{method} {path} {field}={value!r}: {issue}")
            # and an unknown field next to a valid body
        status, body = await world.api.call(method, url, json={**base, "unexpected_field": 1})
        issue = problem(status, body)
        if issue:
            failures.append(f"{method} {path} unexpected_field: {issue}")
    assert swept > 50
    assert not failures, "\n".join(failures)
    assert await state_of(world) == before
    assert docker_names(container_prefix) == [container_prefix + "victim"]


def _fits(value: Any, types: set[str]) -> bool:
    """True when a 'wrong' value is in fact of an allowed JSON type (e.g. 1 is a number and an integer)."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}[type(value)]
    return kind in types or (kind == "integer" and "number" in types) or (kind == "null" and "null" in types)


# -- 2. path parameters and query strings ----------------------------------------------------------------
HOSTILE = ["x\x00y", "ü", "\u202eevil\u202c", "\u200f\u200e", "日本語", "a" * 7000, "..", "../etc", "../../..",
           "%00", "%2e%2e", "/etc/passwd", "..%2F..%2Fetc", "\\..\\..", " ", "null", "-1", "99999999999999999999",
           "1e3", "0x1f", "127.0.0.1%0d%0aX-Injected: 1", "::ffff:127.0.0.1\x00"]


async def test_every_path_parameter_refuses_hostile_values(world):
    before = await state_of(world)
    failures, swept = [], 0
    for method, path, handler in ROUTES:
        params = _PARAM.findall(path)
        if not params:
            continue
        for name in params:
            for value in HOSTILE:
                url = fill(path, {**world.params, name: value})
                kwargs: dict[str, Any] = {}
                if method in BODY_METHODS and meta(handler).get("body") is not None:
                    model = meta(handler)["body"].__name__
                    kwargs["json"] = BASE_BODIES.get(model, {})
                status, body = await world.api.call(method, url, **kwargs)
                swept += 1
                issue = problem(status, body)
                if issue:
                    failures.append(f"{method} {path} {name}={value[:40]!r}: {issue}")
    assert swept > 200
    assert not failures, "\n".join(failures)
    assert await state_of(world) == before


QUERY_ABUSE = [{"unexpected": "1"}, {"path": "x\x00y"}, {"path": "../x"}, {"path": "/etc"}, {"timeout": "abc"},
               {"timeout": "-1"}, {"timeout": "1e999"}, {"timeout": "nan"}, {"lines": "0"}, {"lines": "1.5"},
               {"lines": "99999999999999999999999"}, {"in_use": "maybe"}, {"protocol": "icmp"}, {"ip": "999.1.1.1"},
               {"ip": "ü"}]
# Not swept: a repeated parameter (`?protocol=tcp&protocol=udp`) is read as its first value (200), not refused.


async def test_every_query_model_refuses_bad_parameters(world):
    before = await state_of(world)
    failures, swept = [], 0
    for method, path, handler in ROUTES:
        query_model = meta(handler).get("query")
        if query_model is None:
            continue
        names = set(query_model.model_fields)
        url = fill(path, world.params)
        for params in QUERY_ABUSE:
            if not (set(params) & names or "unexpected" in params):
                continue
            pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
            status, body = await world.api.call(method, url + "?" + urllib.parse.urlencode(pairs))
            swept += 1
            issue = problem(status, body)
            if issue:
                failures.append(f"{method} {path} ?{pairs}: {issue}")
    assert swept > 20
    assert not failures, "\n".join(failures)
    assert await state_of(world) == before


async def test_overlong_request_line_is_a_4xx(world):
    """A 10k-character id in the URL: refused (by aiohttp's parser, before any handler) with a 4xx."""
    async with world.api.client.get("/containers/" + "a" * 10_000, headers=world.api.headers) as resp:
        assert 400 <= resp.status < 500, resp.status
    status, body = await world.api.get("/containers")
    assert status == 200


# -- 3. oversized bodies ---------------------------------------------------------------------------------
async def test_oversized_bodies_are_413_on_every_body_route(aiohttp_client, make_config, container_prefix,
                                                            auth_headers, no_blocking_calls):
    config = make_config(docker={"container_prefix": container_prefix}, api={"max_body_bytes": 1024})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    volume_id = await make_volume(api)
    params = route_params(volume_id)
    blob = json.dumps({"path": "big.txt", "content": "x" * 4096}).encode()
    failures, swept = [], 0
    for method, path, handler in ROUTES:
        if method not in BODY_METHODS or meta(handler).get("body") is None:
            continue
        url = fill(path, params)
        status, body = await api.call(method, url, data=blob, headers={"Content-Type": "application/json"})
        swept += 1
        if status != 413 or problem(status, body):
            failures.append(f"{method} {path} (Content-Length): {status} {body!r:.150}")

        async def chunks():
            for i in range(0, len(blob), 512):
                yield blob[i:i + 512]

        status, body = await api.call(method, url, data=chunks(), headers={"Content-Type": "application/json"})
        if status != 413 or problem(status, body):
            failures.append(f"{method} {path} (chunked): {status} {body!r:.150}")
    assert swept >= 10
    assert not failures, "\n".join(failures)
    status, body = await api.get(f"/volumes/{volume_id}/files")
    assert status == 200 and body["entries"] == []


async def test_oversized_bodies_are_413_also_on_routes_that_read_no_body(aiohttp_client, make_config, container_prefix,
                                                                         auth_headers, no_blocking_calls):
    config = make_config(docker={"container_prefix": container_prefix}, api={"max_body_bytes": 1024})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    params = route_params(port="40099")
    answers = {}
    for method, path, handler in ROUTES:
        if getattr(handler, "__body_limit__", None) is not None:
            continue  # a streamed upload has its own limit (volumes.max_upload_*), tested with its route
        if method in BODY_METHODS and meta(handler).get("body") is None:
            status, body = await api.call(method, fill(path, params), data=b"x" * 5_000_000,
                                          headers={"Content-Type": "application/json"})
            assert status < 500, (method, path, status, body)
            answers[f"{method} {path}"] = status
    _, volumes = await api.get("/volumes")
    print(f"\n[413] routes without a body, 5 MB body: {answers}; volumes made: {volumes['count']}")
    assert all(status == 413 for status in answers.values()), answers
    assert volumes["count"] == 0


# -- 4. names, traversal and links in the file routes ---------------------------------------------------
def file_calls(target: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """Every file route with `target` in each position it can take: (method, route, kwargs, label)."""
    return [
        ("POST", "/files", {"json": {"path": target, "content": "pwned"}}, "write"),
        ("GET", "/files/content", {"params": {"path": target}}, "read"),
        ("GET", "/files", {"params": {"path": target}}, "list"),
        ("DELETE", "/files", {"params": {"path": target}}, "delete"),
        ("POST", "/folders", {"json": {"path": target}}, "mkdir"),
        ("POST", "/copy", {"json": {"source": target, "destination": "copied"}}, "copy-source"),
        ("POST", "/copy", {"json": {"source": "a.txt", "destination": target}}, "copy-destination"),
        ("POST", "/rename", {"json": {"source": target, "destination": "renamed"}}, "rename-source"),
        ("POST", "/rename", {"json": {"source": "dir/inner.txt", "destination": target}}, "rename-destination"),
        ("POST", "/compress", {"json": {"paths": [target], "format": "zip", "destination": "c.zip"}}, "compress-source"),
        ("POST", "/compress", {"json": {"paths": ["a.txt"], "format": "tar", "destination": target}}, "compress-destination"),
        ("POST", "/decompress", {"json": {"path": target}}, "decompress-archive"),
        ("POST", "/decompress", {"json": {"path": "ok.tar", "destination": target}}, "decompress-destination"),
    ]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "sentinel.txt").write_text("do not touch")
    (out / "sub" / "deep.txt").write_text("deep")
    return out


def ok_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("from-archive.txt")
        data = b"archived"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def reset_volume(world: World) -> None:
    """The volume's baseline: a.txt, dir/inner.txt and ok.tar (links are planted by the tests)."""
    for entry in world.volume.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    (world.volume / "a.txt").write_text("hello")
    (world.volume / "dir").mkdir()
    (world.volume / "dir" / "inner.txt").write_text("inner")
    (world.volume / "ok.tar").write_bytes(ok_tar())


def plant(world: World, outside: Path) -> None:
    v = world.volume
    os.symlink(outside, v / "escape")                              # a directory outside
    os.symlink(outside / "sentinel.txt", v / "link.txt")           # a file outside
    os.symlink(outside / "not-yet-there.txt", v / "dangling")      # would create a file outside
    os.symlink("/", v / "rootlink")                                # the host's root
    os.symlink("../../../../../../../" + str(outside).lstrip("/"), v / "rel")  # relative, climbing out
    os.symlink(outside, v / "dir" / "escape")                      # nested
    os.symlink("escape/sub", v / "chain")                          # a link to a link to outside


LINK_TARGETS_MIDDLE = ["escape/sentinel.txt", "escape/sub/deep.txt", "escape/newfile", "dir/escape/sub",
                       "dir/escape/newdir/x", "rootlink/etc/hostname", "rootlink/tmp/lightd-pwned", "rel/sentinel.txt",
                       "chain/deep.txt", "chain/new"]
# "escape/" and "escape/." name the link itself (empty and "." components are dropped, never resolved).
LINK_TARGETS_FINAL = ["escape", "link.txt", "dangling", "rootlink", "rel", "dir/escape", "chain", "escape/", "escape/."]
# A request may act on the link itself (never on what it points to) for these: delete removes the link,
# rename moves it, list reports it, compress skips it (an empty archive with the link in `skipped`).
ON_THE_LINK_ITSELF = {"delete", "rename-source", "list", "compress-source"}


async def test_planted_links_on_every_side_of_every_file_route(world, outside):
    base = f"/volumes/{world.volume_id}"
    outside_before = tree(outside)
    host_tmp = Path("/tmp/lightd-pwned")
    failures: list[str] = []
    swept = 0
    for target in LINK_TARGETS_MIDDLE + LINK_TARGETS_FINAL:
        final = target in LINK_TARGETS_FINAL
        for method, route, kwargs, label in file_calls(target):
            await reset_volume(world)
            plant(world, outside)
            before = tree(world.volume)
            status, body = await world.api.call(method, base + route, **kwargs)
            swept += 1
            allowed_2xx = final and label in ON_THE_LINK_ITSELF
            issue = problem(status, body, allow_2xx=allowed_2xx)
            if issue:
                failures.append(f"{label} {target!r}: {issue}")
            if status >= 400 and tree(world.volume) != before:
                failures.append(f"{label} {target!r}: refused ({status}) but the volume changed")
            if tree(outside) != outside_before:
                failures.append(f"{label} {target!r}: WROTE OUTSIDE THE VOLUME")
                outside_before = tree(outside)
            if host_tmp.exists():
                failures.append(f"{label} {target!r}: created {host_tmp}")
        # listing the volume root reports links without following them
    status, body = await world.api.get(base + "/files")
    assert status == 200 and {e["name"] for e in body["entries"]} >= {"escape", "link.txt", "dangling"}
    assert swept > 200
    assert not failures, "\n".join(failures)
    assert (outside / "sentinel.txt").read_text() == "do not touch"


NAMES_OK = ["ü.txt", "\u202etxt.exe", "\u200f\u200e.cfg", "日本語/ファイル.txt", "emoji-😀.txt", "a b c.txt",
            "..%2F..%2Fescaped", "%2e%2e", "..\\..\\win.txt", "...", "....//x", "-rf", "*", "'; rm -rf /; '",
            "é" * 127]
NAMES_BAD = ["x\x00y", "a" * 256, "é" * 128, "a/" * 2100, "../x", "a/../../x", "/abs", "//abs", "./../x",
             "dir/../../x", "x/" + "y" * 300]


async def test_unicode_nul_and_traversal_names_stay_inside_the_volume(world, outside):
    base = f"/volumes/{world.volume_id}"
    outside_before = tree(outside)
    parent_before = tree(world.volume.parent.parent)  # the data dir: volumes/, the db, servers/
    failures: list[str] = []
    for name in NAMES_BAD:
        for method, route, kwargs, label in file_calls(name):
            await reset_volume(world)
            before = tree(world.volume)
            status, body = await world.api.call(method, base + route, **kwargs)
            issue = problem(status, body)
            if issue:
                failures.append(f"{label} {name[:40]!r}: {issue}")
            if tree(world.volume) != before:
                failures.append(f"{label} {name[:40]!r}: refused but the volume changed")
    for name in NAMES_OK:  # odd but legal names: created inside the volume, or refused; never outside
        await reset_volume(world)
        status, body = await world.api.post(base + "/files", json={"path": name, "content": "odd"})
        issue = problem(status, body, allow_2xx=True)
        if issue:
            failures.append(f"write {name!r}: {issue}")
        elif status == 201:
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if not (world.volume.joinpath(*parts)).is_file():
                failures.append(f"write {name!r}: 201 but not at {'/'.join(parts)} inside the volume")
            status, body = await world.api.get(base + "/files/content", params={"path": name})
            if status != 200:
                failures.append(f"read back {name!r}: {status}")
    # raw encodings the client library would normalise: percent-encoded traversal and NUL in the query
    for raw in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "a%00b", "%2Fetc%2Fpasswd", "..%5C..%5Cx",
                "%ED%A0%80", "%C0%AE%C0%AE/x", "%FF"):
        for route in ("/files", "/files/content"):
            await reset_volume(world)
            before = tree(world.volume)
            async with world.api.client.get(f"{base}{route}?path={raw}", headers=world.api.headers) as resp:
                body = await resp.json() if resp.content_type == "application/json" else await resp.read()
                status = resp.status
            if status >= 500 or (status >= 400 and problem(status, body)):
                failures.append(f"GET {route}?path={raw}: {problem(status, body)}")
            if status == 200 and "etc" in raw and route == "/files/content":
                failures.append(f"GET {route}?path={raw}: served {body!r:.60}")
    # a lone surrogate in a JSON body (valid JSON text, not encodable as a file name)
    for method, route, payload in (("POST", "/files", b'{"path": "a\\ud800b", "content": "x"}'),
                                   ("POST", "/folders", b'{"path": "\\udcff"}'),
                                   ("POST", "/copy", b'{"source": "a.txt", "destination": "\\ud800"}'),
                                   ("POST", "/files", b'{"path": "ok.txt", "content": "\\ud800"}')):
        await reset_volume(world)
        status, body = await world.api.call(method, base + route, data=payload,
                                            headers={"Content-Type": "application/json"})
        issue = problem(status, body, allow_2xx=route == "/files" and b"ok.txt" in payload)
        if issue:
            failures.append(f"{method} {route} {payload!r}: {issue}")
    assert not failures, "\n".join(failures)
    assert tree(outside) == outside_before
    after = tree(world.volume.parent.parent)
    outside_volume = {k: v for k, v in after.items() if not k.startswith(f"volumes/{world.volume_id}")
                      and not k.startswith("lightd.db")}
    assert outside_volume == {k: v for k, v in parent_before.items()
                              if not k.startswith(f"volumes/{world.volume_id}") and not k.startswith("lightd.db")}


# -- 5. archives: zip-slip, hostile entries, bombs -------------------------------------------------------
def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tinfo(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def hostile_archives(outside: Path) -> dict[str, bytes]:
    symlink_zip = zipfile.ZipInfo("zlink")
    symlink_zip.external_attr = 0o120777 << 16
    return {
        "slip.zip": zip_bytes([("ok.txt", b"ok"), ("../../../../outside-slip.txt", b"slip"),
                               (str(outside / "abs.txt"), b"abs"), ("a/../../x.txt", b"x"),
                               ("escape/through.txt", b"through a planted link"), (symlink_zip, str(outside).encode()),
                               ("zlink/after-link.txt", b"after")]),
        "slip.tar": tar_bytes([
            (tinfo("tlink", tarfile.SYMTYPE, link=str(outside)), None),
            (tinfo("tlink/through.txt", size=4), b"pwnd"),
            (tinfo("hard", tarfile.LNKTYPE, link=str(outside / "sentinel.txt")), None),
            (tinfo("../up.txt", size=2), b"up"),
            (tinfo("/abs-tar.txt", size=3), b"abs"),
            (tinfo("fifo", tarfile.FIFOTYPE), None),
            (tinfo("dev", tarfile.CHRTYPE), None),
            (tinfo("..", tarfile.DIRTYPE), None),
            (tinfo("./../dot-up.txt", size=1), b"d"),
            (tinfo("fine.txt", size=4), b"fine"),
        ]),
        "slip.tar.gz": tar_bytes([(tinfo("../../gz-up.txt", size=2), b"up"), (tinfo("g.txt", size=1), b"g")], "w:gz"),
        "slip.tar.bz2": tar_bytes([(tinfo("rel-link", tarfile.SYMTYPE, link="../../.."), None),
                                   (tinfo("rel-link/etc/x", size=1), b"x")], "w:bz2"),
        "not-an-archive.zip": os.urandom(4096),
        "truncated.tar.gz": tar_bytes([(tinfo("t.txt", size=100000), os.urandom(100000))], "w:gz")[:5000],
        "empty.zip": b"",
        "text.tar": b"hello, I am not a tar file\n" * 40,
    }


async def test_decompress_refuses_or_skips_hostile_archives(world, outside):
    base = f"/volumes/{world.volume_id}"
    outside_before = tree(outside)
    failures = []
    for name, data in hostile_archives(outside).items():
        for destination in (None, "into", "escape", "dir/escape/sub"):
            await reset_volume(world)
            plant(world, outside)
            (world.volume / name).write_bytes(data)
            before = tree(world.volume)
            payload = {"path": name} if destination is None else {"path": name, "destination": destination}
            status, body = await world.api.post(base + "/decompress", json=payload)
            issue = problem(status, body, allow_2xx="escape" not in (destination or "")
                            and name.startswith("slip"))
            if issue:
                failures.append(f"{name} -> {destination}: {issue}")
            if status >= 400 and tree(world.volume) != before:
                failures.append(f"{name} -> {destination}: refused but the volume changed")
            if status < 300:
                for path, entry in tree(world.volume).items():
                    if path not in before and entry[0] not in ("file", "dir"):
                        failures.append(f"{name} -> {destination}: extracted a {entry[0]} at {path}")
            if tree(outside) != outside_before:
                failures.append(f"{name} -> {destination}: WROTE OUTSIDE THE VOLUME")
                outside_before = tree(outside)
    # a FIFO named like an archive is refused without hanging
    await reset_volume(world)
    os.mkfifo(world.volume / "pipe.zip")
    status, body = await asyncio.wait_for(world.api.post(base + "/decompress", json={"path": "pipe.zip"}), 10)
    if problem(status, body):
        failures.append(f"fifo: {problem(status, body)}")
    assert not failures, "\n".join(failures)
    for stray in (world.volume.parent / "outside-slip.txt", world.volume.parent.parent / "up.txt", Path("/abs-tar.txt")):
        assert not stray.exists(), stray


async def test_archive_bombs_are_400_and_leave_the_volume_unchanged(aiohttp_client, make_config, container_prefix,
                                                                    auth_headers, no_blocking_calls):
    config = make_config(docker={"container_prefix": container_prefix},
                         volumes={"archive_max_entries": 50, "archive_max_total_bytes": 1_000_000})
    api = Api(await aiohttp_client(create_app(config)), auth_headers)
    status, body = await api.post("/volumes")
    volume_id, volume = body["volume_id"], Path(body["path"])
    (volume / "keep.txt").write_text("keep")
    sparse = tinfo("huge.bin", size=50_000_000)
    bombs = {
        "many.zip": zip_bytes([(f"f{i}.txt", b"x") for i in range(200)]),
        "many.tar": tar_bytes([(tinfo(f"d/f{i}", size=1), b"x") for i in range(200)]),
        "deflate.zip": zip_bytes([("ok.txt", b"fine"), ("zeros.bin", b"\0" * 20_000_000)], zipfile.ZIP_DEFLATED),
        "gz.tar.gz": tar_bytes([(tinfo("ok.txt", size=4), b"fine"), (tinfo("zeros.bin", size=20_000_000),
                                                                       b"\0" * 20_000_000)], "w:gz"),
        "bz.tar.bz2": tar_bytes([(tinfo("zeros.bin", size=20_000_000), b"\0" * 20_000_000)], "w:bz2"),
        # a header declaring 50 MB with no data behind it: refused from the header, before any data is read
        "declared.tar": tinfo("first.txt", size=5).tobuf() + b"small".ljust(512, b"\0") + sparse.tobuf() + b"\0" * 2048,
        "many-dirs.zip": zip_bytes([("/".join(["d"] * 60) + "/x.txt", b"deep")] + [(f"e{i}/", b"") for i in range(100)]),
    }
    failures = []
    for name, data in bombs.items():
        (volume / name).write_bytes(data)
        before = tree(volume)
        status, answer = await asyncio.wait_for(api.post(f"/volumes/{volume_id}/decompress",
                                                         json={"path": name, "destination": "out"}), 60)
        if status != 400 or problem(status, answer):
            failures.append(f"{name}: {status} {answer!r:.200}")
        if tree(volume) != before:
            failures.append(f"{name}: the volume changed ({sorted(set(tree(volume)) - set(before))[:5]})")
        (volume / name).unlink()
    assert not failures, "\n".join(failures)


# -- 6. refused container creates leave nothing behind ---------------------------------------------------
async def test_refused_creates_leave_no_record_port_or_docker_container(dapi, container_prefix):
    volume_id = await make_volume(dapi)
    for port in (40001, 40002):
        assert (await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": port}))[0] == 201
    await create_server(dapi, "holder", volume_id=await make_volume(dapi),
                        ports=[{"ip": "127.0.0.1", "port": 40002, "protocol": "tcp"}])
    good = {"image": TEST_IMAGE, "volume_id": volume_id, "startup_command": "sleep 1"}
    p1 = {"ip": "127.0.0.1", "port": 40001, "protocol": "tcp"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("id with NUL", {**good, "internal_id": "x\x00y"}),
        ("id with ü", {**good, "internal_id": "über"}),
        ("id with RTL mark", {**good, "internal_id": "a\u202eb"}),
        ("id 10k chars", {**good, "internal_id": "a" * 10_000}),
        ("id traversal", {**good, "internal_id": "../../etc"}),
        ("id with slash", {**good, "internal_id": "a/b"}),
        ("id starts with dot", {**good, "internal_id": ".hidden"}),
        ("id empty", {**good, "internal_id": ""}),
        ("id number", {**good, "internal_id": 12345}),
        ("duplicate id", {**good, "internal_id": "holder"}),
        ("bad image", {**good, "internal_id": "c1", "image": "UPPER/Case:tag"}),
        ("image with NUL", {**good, "internal_id": "c1", "image": "busybox\x00:latest"}),
        ("image 10k", {**good, "internal_id": "c1", "image": "a" * 10_000}),
        ("unknown volume", {**good, "internal_id": "c1", "volume_id": "00000000-0000-4000-8000-000000000000"}),
        ("volume traversal", {**good, "internal_id": "c1", "volume_id": "../../etc"}),
        ("port not in pool", {**good, "internal_id": "c1", "ports": [{"ip": "127.0.0.1", "port": 40009}]}),
        ("one free + one missing", {**good, "internal_id": "c1", "ports": [p1, {"ip": "127.0.0.1", "port": 40009}]}),
        ("one free + one taken", {**good, "internal_id": "c1", "ports": [p1, {"ip": "127.0.0.1", "port": 40002}]}),
        ("duplicate ports", {**good, "internal_id": "c1", "ports": [p1, p1]}),
        ("port as string", {**good, "internal_id": "c1", "ports": [{"ip": "127.0.0.1", "port": "40001"}]}),
        ("mount not allowed", {**good, "internal_id": "c1", "ports": [p1],
                               "mount": [{"source": "/etc", "target": "/mnt/etc"}]}),
        ("mount traversal", {**good, "internal_id": "c1", "mount": [{"source": "/srv/../etc", "target": "/m"}]}),
        ("bad regex", {**good, "internal_id": "c1", "ports": [p1], "start_pattern": "(unclosed"}),
        ("bad env key", {**good, "internal_id": "c1", "environment": {"A=B": "x"}}),
        ("env NUL", {**good, "internal_id": "c1", "environment": {"A": "x\x00y"}}),
        ("memory too small", {**good, "internal_id": "c1", "limits": {"memory": 1024}}),
        ("memory string", {**good, "internal_id": "c1", "limits": {"memory": "1g"}}),
        ("cpu negative", {**good, "internal_id": "c1", "limits": {"cpu": -1}}),
        ("bad signal", {**good, "internal_id": "c1", "stop": {"type": "signal", "value": "SIGKILL9"}}),
        ("multi-line stop command", {**good, "internal_id": "c1", "stop": {"type": "command", "value": "a\nb"}}),
        ("startup 20k", {**good, "internal_id": "c1", "startup_command": "x" * 20_000}),
        ("extra field", {**good, "internal_id": "c1", "privileged": True}),
    ]
    failures = []
    for label, body in cases:
        status, answer = await dapi.post("/containers", json=body)
        issue = problem(status, answer)
        if issue:
            failures.append(f"{label}: {issue}")
        _, listing = await dapi.get("/containers")
        ids = sorted(c["internal_id"] for c in listing["containers"])
        if ids != ["holder"]:
            failures.append(f"{label}: containers now {ids}")
        _, ports = await dapi.get("/network/ports")
        held = {(p["port"], p["in_use"], p["container"]) for p in ports["ports"]}
        if held != {(40001, False, None), (40002, True, "holder")}:
            failures.append(f"{label}: ports now {sorted(held)}")
        if docker_names(container_prefix) != [container_prefix + "holder"]:
            failures.append(f"{label}: docker containers now {docker_names(container_prefix)}")
    assert not failures, "\n".join(failures)


async def test_concurrent_creates_of_one_id_are_one_202_and_one_409(dapi, container_prefix):
    volume_id = await make_volume(dapi)
    assert (await dapi.post("/network/ports", json={"ip": "127.0.0.1", "port": 40001}))[0] == 201
    good = {"image": TEST_IMAGE, "volume_id": volume_id, "startup_command": "sleep 1"}
    p1 = {"ip": "127.0.0.1", "port": 40001, "protocol": "tcp"}
    results = await asyncio.gather(*(dapi.post("/containers", json={**good, "internal_id": "twin", "ports": [p1]})
                                     for _ in range(2)))
    statuses = sorted(status for status, _ in results)
    _, listing = await dapi.get("/containers")
    _, port = await dapi.get("/network/ports/127.0.0.1/40001")
    print(f"\n[twin] statuses {statuses}; port 40001 {port}")
    assert sorted(c["internal_id"] for c in listing["containers"]) == ["twin"]
    assert port["in_use"] and port["container"] == "twin", port  # the accepted create still holds its port
    assert statuses == [202, 409], results
    # the accepted create runs on after its 202: let it end here, so it never lands after this test's
    # containers were removed (a stray `Created` container on the shared engine)
    await wait_install(dapi, "twin", "ready")
    await wait_for(lambda: docker_names(container_prefix) == [container_prefix + "twin"], timeout=30)
