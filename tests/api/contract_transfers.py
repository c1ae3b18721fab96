"""The contract test's calls of the pull and signed-URL routes (tests/api/test_openapi_contract.py): each
answer validated against the document like the others."""

from __future__ import annotations

from typing import Any

import aiohttp
from yarl import URL

from lightd import keys
from lightd.net_guard import AddressPolicy
from tests.api.pull_origin import Origin
from tests.conftest import wait_for

PULL = "/volumes/{volume_id}/files/pull"


async def pulls_and_signed_urls(c: Any, vol: str) -> None:
    """Pull a file and cancel a pull (from a local origin the policy admits), then download and upload a file
    of `vol` through signed URLs; `vol` holds a/one.txt."""
    origin = await Origin("127.0.0.2").start()
    c.client.app[keys.PULLS].policy = AddressPolicy(["127.0.0.2/32"])
    try:
        done = await c.call("POST", PULL, 202, json_body={"url": f"{origin.base}/file.bin"}, volume_id=vol)
        await wait_for(lambda: _pull_ended(c, vol, done["id"]), timeout=20)
        slow = await c.call("POST", PULL, 202, json_body={"url": f"{origin.base}/slow"}, volume_id=vol)
        await c.call("DELETE", PULL + "/{pull_id}", 200, volume_id=vol, pull_id=slow["id"])
        await c.call("GET", PULL, 200, volume_id=vol)
    finally:
        await origin.stop()

    minted = await c.call("POST", "/auth/signed-urls", 201,
                          json_body={"purpose": "file-download", "volume_id": vol, "path": "a/one.txt"})
    assert await c.call("GET", "/download/file", 200, params=_query(minted), headers={}) == b"hello"
    used = await c.call("GET", "/download/file", 401, params=_query(minted), headers={})
    assert used["code"] == "signed_url_used"
    minted = await c.call("POST", "/auth/signed-urls", 201, json_body={"purpose": "file-upload", "volume_id": vol})
    form = aiohttp.FormData()
    form.add_field("files", b"uploaded", filename="up.txt")
    async with c.client.post("/upload/file", params=_query(minted), data=form) as resp:
        assert resp.status == 201, await resp.text()
        schema = c.document["paths"]["/upload/file"]["post"]["responses"]["201"]["content"]["application/json"]
        c.validate(await resp.json(), schema["schema"], "POST /upload/file 201")
    c.seen.add(("POST", "/upload/file"))


async def signed_backup_download(c: Any, internal_id: str) -> None:
    """Back up an offline server and download the backup through a signed URL."""
    made = await c.call("POST", "/containers/{container_id}/backups", 202, json_body={}, container_id=internal_id)

    async def completed() -> bool:
        view = await c.call("GET", "/containers/{container_id}/backups/{backup_id}", 200, container_id=internal_id,
                            backup_id=made["backup_id"])
        assert view["status"] in ("running", "completed"), view
        return view["status"] == "completed"

    await wait_for(completed, timeout=60)
    minted = await c.call("POST", "/auth/signed-urls", 201, json_body={
        "purpose": "backup-download", "container_id": internal_id, "backup_id": made["backup_id"]})
    await c.call("GET", "/download/backup", 200, params=_query(minted), headers={})


def _query(minted: dict[str, Any]) -> dict[str, str]:
    return dict(URL(minted["url"]).query)


async def _pull_ended(c: Any, vol: str, pull_id: str) -> bool:
    view = await c.call("GET", PULL + "/{pull_id}", 200, volume_id=vol, pull_id=pull_id)
    assert view["state"] in ("running", "completed"), view
    return view["state"] == "completed"
