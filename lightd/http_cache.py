"""Answers whose body is built once and served many times (the unpaged GET /containers a panel polls): the
body's ETag (a `If-None-Match` that names it gets a 304 with no body) and its gzip encoding (for a client
whose `Accept-Encoding` takes gzip), each made once per body, not per request."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import Mapping

from aiohttp import web

from lightd.volumes.transfer import etag_matches  # If-None-Match's weak comparison, as for files

GZIP_MIN_BYTES = 1024
"""Smaller bodies are sent as they are: gzip's header and a connection's framing would outweigh the gain."""
GZIP_LEVEL = 6
GZIP_IN_THREAD_BYTES = 64 * 1024
"""A body this large is compressed off the event loop (zlib releases the GIL): the list of 1000 servers
(654 KB, 41 KB gzipped) takes milliseconds at level 6, once per change."""


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 16+15: a gzip member
    return compressor.compress(data) + compressor.flush()


def accepts_gzip(accept_encoding: str) -> bool:
    """True when `Accept-Encoding` takes gzip with a quality above 0 (RFC 9110 12.5.3): by name, or by `*`
    when gzip is not named (`gzip;q=0, *` refuses it)."""
    named: float | None = None
    star: float | None = None
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if coding == "*":
            star = quality
        else:
            named = quality if named is None else max(named, quality)
    chosen = named if named is not None else star
    return chosen is not None and chosen > 0


class EncodedBody:
    """One body with its strong ETags (one per representation: as it is, and gzip-encoded, as Apache and
    nginx tell them apart) and its gzip encoding once a client asked for it."""

    __slots__ = ("raw", "etag", "gzip_etag", "_gzip", "_gzip_lock")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        digest = hashlib.blake2b(raw, digest_size=12).hexdigest()
        self.etag = f'"{digest}"'
        self.gzip_etag = f'"{digest}-gzip"'
        self._gzip: bytes | None = None
        self._gzip_lock = asyncio.Lock()  # concurrent first askers wait for one compression

    async def gzipped(self) -> bytes:
        if self._gzip is None:
            async with self._gzip_lock:
                if self._gzip is None:
                    if len(self.raw) >= GZIP_IN_THREAD_BYTES:
                        self._gzip = await asyncio.to_thread(_gzip, self.raw)
                    else:
                        self._gzip = _gzip(self.raw)
        return self._gzip


class CachedAnswer:
    """The last body served on one route, kept while its producer hands back the same bytes object (a
    producer that caches its encoding, as `ServerManager.listing_json`, returns a new object only on change)."""

    def __init__(self) -> None:
        self._body: EncodedBody | None = None

    def of(self, raw: bytes) -> EncodedBody:
        if self._body is None or self._body.raw is not raw:
            self._body = EncodedBody(raw)
        return self._body

    async def response(self, request: web.Request, raw: bytes, *,
                       content_type: str = "application/json") -> web.Response:
        """200 with the body (gzip-encoded when the client takes it), or 304 when the client has it."""
        body = self.of(raw)
        request_headers: Mapping[str, str] = request.headers
        gzipped = len(raw) >= GZIP_MIN_BYTES and accepts_gzip(request_headers.get("Accept-Encoding", ""))
        headers: dict[str, str] = {"ETag": body.gzip_etag if gzipped else body.etag, "Vary": "Accept-Encoding"}
        # Either representation's tag says the client holds the current content.
        if_none_match = request_headers.get("If-None-Match", "")
        if if_none_match and (etag_matches(if_none_match, body.etag) or etag_matches(if_none_match, body.gzip_etag)):
            return web.Response(status=304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=await body.gzipped(), content_type=content_type, headers=headers)
        return web.Response(body=raw, content_type=content_type, headers=headers)
