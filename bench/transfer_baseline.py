"""Baseline for file_transfer: a plain aiohttp app, started as a subprocess.

    python bench/transfer_baseline.py PORT DIR

`PUT /upload/{name}` writes the raw request body to DIR/name as it arrives (what `curl -T` sends);
`PUT /extract/{name}` pipes it into `zstd -d | tar -x -C DIR/name` (bench/transfer.py's like-for-like
receiver: it unpacks the volume, as a lightd target does);
`GET /file/{name}` answers DIR/name with aiohttp's FileResponse, which honours Range and uses sendfile(2).
It runs on asyncio's own loop: uvloop has no loop.sendfile, and FileResponse would fall back to reads.
No auth, no middleware, no sandbox, no fsync: what aiohttp and the kernel cost on this machine.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, root = int(sys.argv[1]), Path(sys.argv[2])

    async def upload(request: web.Request) -> web.Response:
        size = 0
        with open(root / request.match_info["name"], "wb") as out:
            async for chunk in request.content.iter_any():
                out.write(chunk)
                size += len(chunk)
        return web.json_response({"size": size}, status=201)

    async def extract(request: web.Request) -> web.Response:
        folder = root / request.match_info["name"]
        folder.mkdir()  # the caller removes it after each run, untimed
        unpack = await asyncio.create_subprocess_shell(f"zstd -d -q -c | tar -x -C '{folder}'", stdin=asyncio.subprocess.PIPE)
        assert unpack.stdin is not None
        size = 0
        async for chunk in request.content.iter_any():
            unpack.stdin.write(chunk)
            await unpack.stdin.drain()
            size += len(chunk)
        unpack.stdin.close()
        code = await unpack.wait()
        return web.json_response({"size": size, "exit": code}, status=201 if code == 0 else 500)

    async def download(request: web.Request) -> web.FileResponse:
        return web.FileResponse(root / request.match_info["name"])

    app = web.Application(client_max_size=1 << 40)
    app.router.add_put("/upload/{name}", upload)
    app.router.add_put("/extract/{name}", extract)
    app.router.add_get("/file/{name}", download)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
