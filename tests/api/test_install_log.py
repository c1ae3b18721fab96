"""Install output (issue 11, item 6): streamed to console sockets as `install_output` frames, kept in
`install.log` (bounded in bytes, in memory and on disk) and served by GET /containers/{id}/install-log."""

from __future__ import annotations

import os

from lightd import keys
from lightd.app import create_app
from lightd.servers.install_log import FILE_NAME, InstallLog
from tests.api.ws_helpers import Console, connect
from tests.conftest import Api, wait_for
from tests.servers.helpers import EventLog, create_server, get, wait_install

SCRIPT = "sleep 2; for i in 1 2 3 4 5; do echo install-line-$i; done; echo to-stderr >&2\n"


async def text_of(api: Api, path: str) -> tuple[int, str, dict[str, str]]:
    async with api.client.get(path, headers=api.headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_install_output_reaches_sockets_and_the_route(dapi, dclient, node_token):
    await create_server(dapi, "inst", ready=False, install_script=SCRIPT)
    console = await connect(dclient, "inst", node_token)  # connected while the script sleeps
    batched = Console(await dclient.ws_connect(f"/ws/inst?token={node_token}&batch=1"))
    await console.until(lambda f: len(console.of("install_output")) == 6, timeout=60)
    # batch mode batches console output only: install output stays one frame per line
    await batched.until(lambda f: len(batched.of("install_output")) == 6, timeout=30)
    await batched.close()
    await wait_install(dapi, "inst", "ready")
    expected = [f"install-line-{i}" for i in range(1, 6)] + ["to-stderr"]
    # stdout and stderr are two streams: their relative order is not kept, each stream's is
    assert sorted(console.of("install_output")) == expected
    assert [line for line in console.of("install_output") if line != "to-stderr"] == expected[:-1]
    assert not any(line.startswith("install-line") for line in console.lines())  # not `console` frames
    frame = next(f for f in console.seen if f["event"] == "install_output")
    assert set(frame) == {"event", "data", "ts"} and isinstance(frame["ts"], int)

    status, text, headers = await text_of(dapi, "/containers/inst/install-log")
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain") and headers["X-Content-Type-Options"] == "nosniff"
    assert sorted(text.splitlines()) == expected and text.endswith("\n")
    status, text, _ = await text_of(dapi, "/containers/inst/install-log?tail=2")
    assert status == 200 and text.count("\n") == 2 and "install-line-5\n" in text
    status, text, _ = await text_of(dapi, "/containers/inst/install-log?tail=100")
    assert text.count("\n") == 6

    for query, field in [("tail=0", "tail"), ("tail=abc", "tail"), ("lines=3", "lines")]:
        status, body = await dapi.get(f"/containers/inst/install-log?{query}")
        assert status == 400 and body["code"] == "validation_failed" and field in body["error"], body


async def test_install_log_shows_progress_and_a_reinstall_replaces_it(dapi, dclient):
    await create_server(dapi, "prog", ready=False, install_script="echo early; sleep 4; echo late\n")

    async def early_while_installing() -> bool:
        status, text, _ = await text_of(dapi, "/containers/prog/install-log")
        return status == 200 and text == "early\n" and (await get(dapi, "prog"))["install_state"] == "installing"

    await wait_for(early_while_installing, timeout=60, interval=0.2)
    await wait_install(dapi, "prog", "ready")
    assert (await text_of(dapi, "/containers/prog/install-log"))[1] == "early\nlate\n"
    status, body = await dapi.post("/containers/prog/reinstall", json={"install_script": "echo second run\n"})
    assert status == 202, body
    await wait_install(dapi, "prog", "ready")
    await wait_for(lambda: (dclient.app[keys.SERVERS].get("prog").data_path / FILE_NAME).exists())
    assert (await text_of(dapi, "/containers/prog/install-log"))[1] == "second run\n"


async def test_no_install_log_is_404(dapi):
    await create_server(dapi, "noscript")
    status, body = await dapi.get("/containers/noscript/install-log")
    assert status == 404 and body["code"] == "not_found" and "no install script has run" in body["error"], body
    status, body = await dapi.get("/containers/missing/install-log")
    assert status == 404 and body["code"] == "not_found", body


async def test_a_failed_install_keeps_its_log(dapi):
    await create_server(dapi, "failing", ready=False, install_script="echo about to fail\nexit 3\n")
    await wait_install(dapi, "failing", "failed")
    status, text, _ = await text_of(dapi, "/containers/failing/install-log")
    assert (status, text) == (200, "about to fail\n")


async def test_hostile_install_flood_is_bounded(aiohttp_client, make_config, container_prefix, auth_headers,
                                                no_blocking_calls):
    """An install script printing ~20 MB: the file and the route keep the last install_log_bytes."""
    cap = 64 * 1024
    client = await aiohttp_client(create_app(make_config(docker={"container_prefix": container_prefix},
                                                         console={"install_log_bytes": cap})))
    api = Api(client, auth_headers)
    script = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -n 270000; echo THE-END\n"
    await create_server(api, "flood", ready=False, install_script=script)
    await wait_install(api, "flood", "ready", timeout=120)
    path = client.app[keys.SERVERS].get("flood").data_path / FILE_NAME
    assert path.stat().st_size <= cap + 1024
    status, text, _ = await text_of(api, "/containers/flood/install-log")
    assert status == 200 and len(text.encode()) <= cap + 1024
    first, *rest = text.split("\n")
    assert first.startswith("[lightd] ") and "earlier lines" in first and f"last {cap} bytes" in first
    assert rest[-2:] == ["THE-END", ""]


async def test_install_log_memory_is_bounded_in_bytes(dapi, dclient):
    """InstallLog on a real server: 40 MB fed in 64 KiB lines keeps at most max_bytes (plus the newest line),
    and every chunk is still published."""
    await create_server(dapi, "mem")
    server = dclient.app[keys.SERVERS].get("mem")
    events = EventLog(dclient.app, "mem")
    log = InstallLog(server, max_bytes=256 * 1024)
    line = b"x" * (64 * 1024 - 1) + b"\n"
    for _ in range(640):
        log.feed(line)
    log.feed(b"last")
    log.finish()
    assert log.size <= 256 * 1024 + 64 * 1024 and len(log.lines) <= 5
    assert log.lines[-1] == "last" and log.dropped_lines >= 636
    assert len(events.of("install_log")) == 641
    events.close()


async def test_install_log_links_are_not_followed(dapi, dclient, tmp_path):
    """A link at install.log is not read through; a link at the temporary name is not written through."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the panel\n")
    await create_server(dapi, "links", install_script="echo first\n")
    data_path = dclient.app[keys.SERVERS].get("links").data_path
    log_path = data_path / FILE_NAME
    log_path.unlink()
    os.symlink(secret, log_path)
    status, body = await dapi.get("/containers/links/install-log")
    assert status == 404, body
    # a FIFO is not opened for reading (that would block) nor served
    log_path.unlink()
    os.mkfifo(log_path)
    status, body = await dapi.get("/containers/links/install-log")
    assert status == 404, body
    log_path.unlink()

    os.symlink(secret, data_path / (FILE_NAME + ".tmp"))
    status, body = await dapi.post("/containers/links/reinstall", json={"install_script": "echo second\n"})
    assert status == 202, body
    await wait_install(dapi, "links", "ready")
    await wait_for(lambda: log_path.exists() and log_path.read_text() == "second\n")
    assert secret.read_text() == "not for the panel\n"
    assert not log_path.is_symlink()
