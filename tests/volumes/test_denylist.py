"""A template's `file_denylist` (as Pterodactyl eggs') enforced on every native file route, signed URLs and
pulls, for a server made from that template on the real engine: denied paths (and their `./`, `//`,
trailing-slash spellings, and paths through a denied folder) are 403 `file_denied`, extraction and
archives leave them out, listings show them; a volume shared by servers gets the union; deleting the
server lifts it."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lightd.volumes.denylist import Denylist, compile_denylist
from tests.api.test_signed_urls import browser, mint
from tests.api.test_volume_files import form
from tests.conftest import TEST_IMAGE, Api
from tests.servers.helpers import create_server, wait_install

DENYLIST = ["secret.txt", "/config/*.yml", "private/", "*.key"]


def template(template_id: str, denylist: list[str]) -> dict[str, Any]:
    return {"id": template_id, "images": {"default": TEST_IMAGE}, "startup": "sleep 1000", "file_denylist": denylist}


async def add_template(api: Api, template_id: str, denylist: list[str]) -> None:
    status, body = await api.post("/templates", json=template(template_id, denylist))
    assert status == 201, body


async def create_from_template(api: Api, server_id: str, template_id: str, volume_id: str) -> None:
    body = {"internal_id": server_id, "template": template_id, "volume_id": volume_id}
    status, answer = await api.post("/containers", json=body)
    assert status == 202, answer
    await wait_install(api, server_id, "ready")


async def denied_volume(api: Api, server_id: str = "denied") -> tuple[str, Path]:
    """A volume with files, used by a server made from a template with DENYLIST."""
    status, body = await api.post("/volumes")
    assert status == 201, body
    volume_id, root = body["volume_id"], Path(body["path"])
    for name, text in {"secret.txt": "s", "a/secret.txt": "s", "config/app.yml": "y", "config/ok.txt": "ok",
                       "private/inner.txt": "p", "ok.txt": "ok", "world/level.dat": "w", "world/x.key": "k"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    await add_template(api, "denying", DENYLIST)
    await create_from_template(api, server_id, "denying", volume_id)
    return volume_id, root


def assert_denied(answer: tuple[int, Any]) -> None:
    status, body = answer
    assert status == 403 and body["code"] == "file_denied" and set(body) >= {"error", "code"}, answer


# -- matching ----------------------------------------------------------------------------------------
def test_matching_is_per_list_and_covers_folders():
    denylist = Denylist()
    denylist.update([["*.jar", "!server.jar"], ["server.jar"], ["logs/"], []])
    assert denylist.denies_path(("server.jar",))  # one list re-including it does not lift another's
    assert denylist.denies_path(("plugins", "a.jar")) and denylist.denies_path(("logs", "today.txt"))
    assert not denylist.denies_path(("LOGS", "today.txt"))  # case-sensitive, as the file system
    assert not denylist.denies_path(()) and not denylist.denies_path(("ok.txt",))
    denylist.update([])
    assert not denylist and not denylist.denies_path(("server.jar",))
    with pytest.raises(ValueError):
        compile_denylist(["x"] * 1001)
    with pytest.raises(ValueError):
        compile_denylist(["x" * 1025])


async def test_import_bounds_the_patterns(dapi: Api):
    status, body = await dapi.post("/templates", json=template("too-many", ["x"] * 1001))
    assert status == 400 and body["details"]["field"] == "file_denylist", body


# -- every route -------------------------------------------------------------------------------------
async def test_every_file_route_refuses_a_denied_path(dapi: Api):
    api = dapi
    volume_id, root = await denied_volume(api)
    base = f"/volumes/{volume_id}"
    for path in ("secret.txt", "./secret.txt", "secret.txt/", "a//secret.txt", "config/app.yml", "private",
                 "private/inner.txt", "./private//inner.txt", "world/x.key"):
        assert_denied(await api.get(f"{base}/files/content", params={"path": path}))
        assert_denied(await api.post(f"{base}/files", json={"path": path, "content": "x"}))
        assert_denied(await api.delete(f"{base}/files", params={"path": path}))
        assert_denied(await api.post(f"{base}/files/chmod", json={"root": "", "files": [{"file": path, "mode": "600"}]}))
        assert_denied(await api.post(f"{base}/rename", json={"source": path, "destination": "moved"}))
        assert_denied(await api.post(f"{base}/rename", json={"source": "ok.txt", "destination": path}))
        assert_denied(await api.post(f"{base}/copy", json={"source": path, "destination": "copied"}))
        assert_denied(await api.post(f"{base}/copy", json={"source": "ok.txt", "destination": path}))
        assert_denied(await api.post(f"{base}/compress", json={"paths": [path], "format": "zip"}))
        assert_denied(await api.get(f"{base}/files/archive", params={"paths": path, "format": "zip"}))
    assert_denied(await api.post(f"{base}/files/delete", json={"root": "a", "files": ["secret.txt"]}))
    assert_denied(await api.get(f"{base}/files", params={"path": "private"}))
    assert_denied(await api.post(f"{base}/folders", json={"path": "private/sub"}))
    assert_denied(await api.post(f"{base}/compress", json={"paths": ["ok.txt"], "format": "zip", "destination": "o.key"}))
    assert_denied(await api.post(f"{base}/files/upload", params={"directory": "private"}, data=form(("n.txt", b"n"))))
    assert_denied(await api.post(f"{base}/files/upload", params={"directory": "a"}, data=form(("secret.txt", b"n"))))
    assert_denied(await api.post(f"{base}/files/pull", json={"url": "https://example.com/", "file_name": "x.key"}))
    # A folder holding a denied entry is neither deleted nor moved whole (the entry would go with it).
    assert_denied(await api.delete(f"{base}/files", params={"path": "world"}))
    assert_denied(await api.post(f"{base}/rename", json={"source": "config", "destination": "cfg"}))
    # Signed URLs go through the same services.
    url = await mint(api, purpose="file-download", volume_id=volume_id, path="config/app.yml")
    assert_denied(await browser(api, "GET", url))
    url = await mint(api, purpose="file-upload", volume_id=volume_id, path="private")
    assert_denied(await browser(api, "POST", url, data=form(("n.txt", b"n"))))
    assert {p.name for p in root.rglob("*")} >= {"secret.txt", "app.yml", "inner.txt", "x.key", "world", "config"}
    assert not (root / "private" / "sub").exists() and not (root / "o.key").exists() and not (root / "moved").exists()

    # Allowed paths still work; a case variant is another file (the file system is case-sensitive).
    status, listing = await api.get(f"{base}/files")
    assert status == 200 and {"secret.txt", "private"} <= {e["name"] for e in listing["entries"]}  # shown, as Wings
    status, body = await api.get(f"{base}/files/content", params={"path": "ok.txt"})
    assert status == 200 and body == b"ok"
    assert (await api.post(f"{base}/files", json={"path": "Secret.txt", "content": "x"}))[0] == 201
    assert (await api.post(f"{base}/rename", json={"source": "a", "destination": "b"}))[0] == 403  # a/secret.txt
    status, found = await api.get(f"{base}/files/search", params={"pattern": "*.txt"})
    assert status == 200 and "private/inner.txt" not in {r["path"] for r in found["results"]}

    # Read-outs of a folder leave denied entries out and say so; extraction never makes them.
    status, body = await api.post(f"{base}/compress", json={"paths": ["config", "world"], "format": "tar",
                                                            "destination": "out.tar"})
    assert status == 201 and {"config/app.yml", "world/x.key"} <= {s["path"] for s in body["skipped"]}, body
    with tarfile.open(root / "out.tar") as tar:
        assert set(tar.getnames()) == {"config", "config/ok.txt", "world", "world/level.dat"}
    status, data = await api.get(f"{base}/files/archive", params={"paths": ["config", "world"], "format": "zip"})
    assert status == 200
    assert set(zipfile.ZipFile(io.BytesIO(data)).namelist()) == {"config/", "config/ok.txt", "world/", "world/level.dat"}
    status, body = await api.post(f"{base}/copy", json={"source": "config", "destination": "cfg2"})
    assert status == 201 and not (root / "cfg2" / "app.yml").exists() and (root / "cfg2" / "ok.txt").exists()
    with tarfile.open(root / "in.tar", "w") as tar:
        for name in ("fine.txt", "secret.txt", "private/p.txt", "deep/x.key"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"z"))
    status, body = await api.post(f"{base}/decompress", json={"path": "in.tar", "destination": "ex"})
    assert status == 200 and body["files"] == 1, body
    assert {s["path"] for s in body["skipped"]} == {"secret.txt", "private/p.txt", "deep/x.key"}
    assert (root / "ex" / "fine.txt").exists() and not (root / "ex" / "secret.txt").exists()
    assert not (root / "ex" / "private").exists()


# -- the union, and its end ----------------------------------------------------------------------------
async def test_a_shared_volume_gets_the_union_until_the_server_is_deleted(dapi: Api):
    api = dapi
    volume_id, _ = await denied_volume(api, "first")
    base = f"/volumes/{volume_id}"
    await add_template(api, "open", [])
    await add_template(api, "ok-denied", ["ok.txt"])
    await create_from_template(api, "second", "open", volume_id)
    assert_denied(await api.get(f"{base}/files/content", params={"path": "secret.txt"}))  # a server without one
    await create_from_template(api, "third", "ok-denied", volume_id)
    assert_denied(await api.get(f"{base}/files/content", params={"path": "ok.txt"}))
    assert_denied(await api.get(f"{base}/files/content", params={"path": "secret.txt"}))
    assert (await api.delete("/containers/first"))[0] == 200
    assert (await api.get(f"{base}/files/content", params={"path": "secret.txt"}))[0] == 200
    assert_denied(await api.get(f"{base}/files/content", params={"path": "ok.txt"}))
    assert (await api.delete("/containers/third"))[0] == 200
    assert (await api.get(f"{base}/files/content", params={"path": "ok.txt"}))[0] == 200
    # A plain server (no template) changes nothing either way.
    await create_server(api, "plain", volume_id=volume_id)
    assert (await api.get(f"{base}/files/content", params={"path": "world/x.key"}))[0] == 200
