"""`compat.<name>.static_dir`: a front end's own web UI on its own port, after its API routes, through the
volume sandbox (no traversal, no symbolic link, no FIFO, no hidden file, no listing), streamed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from lightd.app import create_app
from tests.compat.helpers import free_port

INDEX = b"<!doctype html><title>ui</title>"
BIG = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk


@pytest.fixture
def ui_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ui"
    (root / "assets").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "app.js").write_text("console.log('ui')")
    (root / "assets" / "big.bin").write_bytes(BIG)
    (root / "sub" / "index.html").write_text("sub page")
    (root / ".env").write_text("SECRET=1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the UI")
    # SECURITY: planted links, to a host file and to a directory outside, and a FIFO
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "inside.html").symlink_to(root / "index.html")
    os.mkfifo(root / "pipe")
    return root


@pytest.fixture
async def ui_daemon(aiohttp_client: Callable[..., Any], make_config: Callable[..., Any], ui_dir: Path,
                    no_blocking_calls: None) -> Any:
    ports = {"lxc_tools": free_port(), "lxd_panel": free_port(), "container_codes": free_port()}
    compat = {name: {"enabled": True, "port": port, "static_dir": str(ui_dir)} for name, port in ports.items()}
    client = await aiohttp_client(create_app(make_config(compat=compat)))
    async with aiohttp.ClientSession() as http:
        yield client, http, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


async def fetch(http: aiohttp.ClientSession, url: str, method: str = "GET",
                raw: bool = False) -> tuple[int, Any, bytes]:
    async with http.request(method, yarl.URL(url, encoded=True) if raw else url) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_index_and_files_are_served(ui_daemon: Any):
    _, http, base = ui_daemon
    status, headers, body = await fetch(http, base["lxc_tools"] + "/")
    assert (status, body) == (200, INDEX)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = await fetch(http, base["lxc_tools"] + "/assets/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and body == b"console.log('ui')"
    status, headers, body = await fetch(http, base["lxc_tools"] + "/assets/big.bin")
    assert status == 200 and body == BIG and headers["Content-Type"] == "application/octet-stream"
    status, headers, body = await fetch(http, base["lxc_tools"] + "/assets/big.bin", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(BIG) and body == b""
    assert (await fetch(http, base["lxc_tools"] + "/sub/"))[2] == b"sub page"
    # Container Codes asks every API request for a token, not its UI's files
    assert (await fetch(http, base["container_codes"] + "/assets/app.js"))[0] == 200
    status, _, body = await fetch(http, base["container_codes"] + "/api/containers")
    assert status == 401


async def test_api_routes_win(ui_daemon: Any):
    client, http, base = ui_daemon
    status, headers, body = await fetch(http, base["lxc_tools"] + "/api/health")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    # the LXD panel's own `/` stays its API's; its UI opens at /index.html
    status, headers, _ = await fetch(http, base["lxd_panel"] + "/")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert (await fetch(http, base["lxd_panel"] + "/index.html"))[2] == INDEX
    # an unknown API path is a 404 in the front end's shape, a POST is not a file request
    status, _, body = await fetch(http, base["lxc_tools"] + "/api/nosuch")
    assert status == 404 and b'"error"' in body
    assert (await fetch(http, base["lxc_tools"] + "/index.html", method="POST"))[0] == 404
    # only on the own port: the main port's mount serves no files
    async with client.get("/compat/lxc-tools/index.html") as resp:
        assert resp.status in (401, 404)


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/assets/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/assets/..%2f..%2f..%2fetc%2fpasswd", "/.env", "/passwd", "/escape/secret.txt", "/escape/", "/inside.html",
    "/sub", "/assets/", "/nosuch.js", "/pipe", "/index.html%00.js",
])
async def test_refused_paths(ui_daemon: Any, path: str):
    _, http, base = ui_daemon
    status, _, body = await fetch(http, base["lxc_tools"] + path, raw=True)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"outside the UI" not in body and b"SECRET" not in body
    assert INDEX not in body  # a link even to a file inside is not followed; no directory listing
