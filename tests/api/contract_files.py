"""The contract test's calls of the batch file routes (tests/api/test_openapi_contract.py): a multipart
upload, a search, chmod, a batch delete and a streamed archive, each answer validated against the document."""

from __future__ import annotations

from typing import Any

import aiohttp

FILES = "/volumes/{volume_id}/files"


async def files_contract(c: Any, vol: str) -> None:
    """`vol` holds a/one.txt and the folder b."""
    form = aiohttp.FormData()
    form.add_field("files", b"uploaded here", filename="up.txt", content_type="application/octet-stream")
    uploaded = await c.call("POST", FILES + "/upload", 201, params={"directory": "b"}, data=form, volume_id=vol)
    assert [f["path"] for f in uploaded["files"]] == ["b/up.txt"], uploaded
    found = await c.call("GET", FILES + "/search", 200, params={"pattern": "up.txt"}, volume_id=vol)
    assert [r["path"] for r in found["results"]] == ["b/up.txt"], found
    modes = await c.call("POST", FILES + "/chmod", 200, volume_id=vol,
                         json_body={"root": "b", "files": [{"file": "up.txt", "mode": "0600"}]})
    assert modes["files"][0]["mode"].endswith("600"), modes
    archive = await c.call("GET", FILES + "/archive", 200, params={"paths": "a", "format": "zip"}, volume_id=vol)
    assert archive[:2] == b"PK"
    deleted = await c.call("POST", FILES + "/delete", 200, json_body={"root": "b", "files": ["up.txt", "gone"]},
                           volume_id=vol)
    assert deleted["not_found"] == ["b/gone"] and deleted["deleted"][0]["deleted"] == "file", deleted
