"""Baseline for api_latency: a bare aiohttp app on uvloop (as the daemon uses), started as a subprocess.

    python bench/hello_app.py PORT [BODY_FILE]

`GET /hello` answers a small JSON object; `GET /static` answers the bytes of BODY_FILE (api_latency passes
a copy of lightd's own `GET /containers` answer, so the baseline also pays for sending a body of that size).
No access log, no middleware: what aiohttp itself costs on this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    body = Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else b"{}"

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b'{"hello":"world"}', content_type="application/json")

    async def static(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/static", static)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop_factory() if loop_factory else None)


if __name__ == "__main__":
    main()
