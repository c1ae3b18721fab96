"""`compat.<name>.static_dir`: a front end's own web UI, served on its own port from a directory the admin
chose, for the requests no API route matches (API routes win).

Files are opened through the volume sandbox (`lightd.volumes.sandbox`): each component with
`openat(O_NOFOLLOW)` from the directory's descriptor, so `..`, encoded or not, and symbolic links (even ones
pointing inside) are refused, and only regular files are opened (a FIFO or a device never is). Names
starting with a dot (`.git`, `.env`) are not served, nor are directory listings: a path ending in `/` serves
that directory's `index.html`. Every refusal is a plain 404 in the front end's error shape. Files are
streamed in chunks read off the event loop.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import BinaryIO

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from lightd.errors import LightdError, NotFound
from lightd.volumes.sandbox import Sandbox

CHUNK_BYTES = 256 * 1024
INDEX = "index.html"
# Types the host's mime database may lack or get wrong for a web UI.
WEB_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
             ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
             ".wasm": "application/wasm", ".woff": "font/woff", ".woff2": "font/woff2", ".ico": "image/x-icon",
             ".webmanifest": "application/manifest+json", ".txt": "text/plain"}
TEXT_TYPES = ("text/", "application/json", "application/manifest+json", "image/svg+xml")


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    kind = WEB_TYPES.get(suffix) or mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith(TEXT_TYPES) else kind


class StaticFiles:
    """The files of one UI directory, served read-only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def relative_path(url_path: str) -> str:
        """The file a (percent-decoded) URL path names, relative to the root; NotFound for hidden names."""
        relative = url_path.lstrip("/")
        if relative == "" or relative.endswith("/"):
            relative += INDEX
        if any(part.startswith(".") for part in relative.split("/")):
            raise NotFound("not found")  # SECURITY: `..` (also `%2e%2e`), `.git`, `.env`
        return relative

    def _open(self, relative: str) -> tuple[BinaryIO, int]:
        """The open file and its size. Blocking: called in a worker thread."""
        try:
            with Sandbox(self.root) as box:
                # SECURITY: symlink escape and FIFO/device open — the sandbox's no-follow walk, regular files only.
                return box.open_file(relative)
        except (LightdError, OSError):
            raise NotFound("not found") from None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Stream one file (GET) or its headers (HEAD)."""
        relative = self.relative_path(request.path)
        file, size = await asyncio.to_thread(self._open, relative)
        try:
            response = web.StreamResponse(headers={
                hdrs.CONTENT_TYPE: content_type(relative), hdrs.CACHE_CONTROL: "no-cache",
                "X-Content-Type-Options": "nosniff",
            })
            response.content_length = size
            await response.prepare(request)
            remaining = size if request.method == hdrs.METH_GET else 0
            while remaining > 0:
                chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, remaining))
                if not chunk:
                    break  # the file shrank meanwhile: the client sees a short body
                await response.write(chunk)
                remaining -= len(chunk)
            await response.write_eof()
            return response
        finally:
            file.close()


def static_files_middleware(files: StaticFiles) -> Middleware:
    """Serves `files` for a GET or HEAD no route matched (404 from the router); anything else goes on."""

    @web.middleware
    async def static_files(request: web.Request, handler: Handler) -> web.StreamResponse:
        unrouted = isinstance(request.match_info.http_exception, web.HTTPNotFound)
        if not unrouted or request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
            return await handler(request)
        return await files.serve(request)

    return static_files
