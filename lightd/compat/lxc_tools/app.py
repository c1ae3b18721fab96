"""LXC Tools compatibility front end (`Centralize/lxc` API): LxcTools(services), built once per daemon (its
Socket.IO server and the feed's lifetime), whose create_app() serves it with its error middleware.

Served on its own port (default 5000, `compat.lxc_tools`, env `LXC_API_HOST`/`LXC_API_PORT`) with the
Socket.IO endpoint at `/socket.io/`, and on the main port under `/compat/lxc-tools` (node token required)
with the Socket.IO endpoint at `/compat/lxc-tools/socket.io/` (clients pass that as `socketio_path`).

Status codes and error bodies (`{"error", "details"}`, as documented):
- 400: malformed JSON, a missing field, an invalid container/image/rule name, an invalid SSH key, an
  unknown image, no key for `authkey` (and none configured);
- 404 unknown container, 409 a request the container's state refuses (already running, busy, exists),
  413 too large: a deliberate deviation, the real server answers 500 for all of them (its `lxc` call
  fails); the 4xx says whose fault it is (no server error to alert on), and clients treating non-2xx as
  failure behave the same. `{"error": "Failed to <operation>", "details": <why>}`;
- 500: what fails on the daemon's side (engine unreachable, no free pool port, a Docker error),
  `{"error": "Failed to <operation>", "details": <why>}`; an unexpected exception is
  `{"error": "Internal server error", "details": "request <id>"}` and is logged.
Deviations from the real tool, by design: `restart` keeps data (the real one re-creates the container),
`portforward` publishes a free pool port (the real one forwards host 80 to container 80), `authkey`
takes the key in the body (`{"key"}` or `{"keys"}`) and falls back to
`compat.lxc_tools.authorized_keys_file`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from lightd.compat.base import CompatServices
from lightd.compat.lxc_tools.events import BUS_KIND, SUBSCRIPTION_SIZE, create_socketio, emit_updates
from lightd.compat.lxc_tools.routes import routes
from lightd.errors import BadRequest, Forbidden, Unauthorized
from lightd.http_errors import ErrorAnswer, Failure, Origin, error_middleware
from lightd.tasks import TaskOwner

if TYPE_CHECKING:
    import socketio

log = logging.getLogger(__name__)

BODY_MAX = 256 * 1024
SHUTDOWN_TIMEOUT = 5.0
FAILURES = {
    "list_containers": "Failed to list containers",
    "create_container": "Failed to create container",
    "delete_container": "Failed to delete container",
    "restart_container": "Failed to restart container",
    "start_container": "Failed to start container",
    "connect_container": "Failed to get container info",
    "list_images": "Failed to list images",
    "setup_network": "Failed to setup network",
    "deploy_authkey": "Failed to deploy SSH keys",
    "create_portforward": "Failed to create port forward",
}


def _body(error: str, details: object = None) -> dict[str, object]:
    body: dict[str, object] = {"error": error}
    if details is not None:
        body["details"] = details
    return body


def lxc_error_body(request: web.Request, failure: Failure) -> ErrorAnswer:
    """The lightd error tree in this API's shape and codes (see the module docstring)."""
    error = failure.error
    if failure.origin is Origin.UNHANDLED:
        return ErrorAnswer(_body("Internal server error", f"request {failure.request_id}"))
    if failure.origin is Origin.HTTP:
        if failure.status == 413:
            return ErrorAnswer(_body("Request body too large", f"at most {BODY_MAX} bytes"))
        return ErrorAnswer(_body(failure.reason))
    if isinstance(error, BadRequest):
        return ErrorAnswer(_body(error.message, error.details), status=400)
    if isinstance(error, (Unauthorized, Forbidden)):
        return ErrorAnswer(_body(error.message))
    operation = FAILURES.get(request.match_info.route.name or "", "Operation failed")
    return ErrorAnswer(_body(operation, error.message), status=min(error.status, 500))


class LxcTools:
    """The LXC Tools front end of one daemon: one Socket.IO server, served by both applications (mounted
    and on its own port), fed by one bus subscriber."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services
        self.sio: socketio.AsyncServer | None = None  # made at the first Socket.IO request (socket_server)
        self.tasks = TaskOwner("lxc_tools")
        self._sio_stopped = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The feed, from after the daemon's services start to before they close."""
        subscription = self.services.events.subscribe(kinds={"event", BUS_KIND}, maxsize=SUBSCRIPTION_SIZE)
        try:
            self.tasks.spawn(emit_updates(lambda: self.sio, self.services, subscription), name="socketio-updates")
            yield
        finally:
            subscription.close()
            await self.tasks.close(timeout=5)

    async def _close_sockets(self, app: web.Application) -> None:
        # on_shutdown of each application: every client is disconnected (an open Socket.IO socket would hold
        # the runner's shutdown for its whole timeout), whichever application it came through; the daemon
        # is stopping. The server's own shutdown runs once (a second call fails). Bounded: engine.io's
        # disconnect of a polling session waits for its client to collect the close, which a client that
        # stopped polling never does; its connection is dropped with the runner's then.
        if self.sio is None:
            return  # never made: no client ever connected
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                if self.sio.eio.sockets:  # disconnect() of no client at all fails
                    await self.sio.eio.disconnect()
                if not self._sio_stopped:
                    self._sio_stopped = True
                    await self.sio.shutdown()
        except TimeoutError:
            log.warning("lxc_tools: Socket.IO clients did not close within %.0fs; dropping them", SHUTDOWN_TIMEOUT)

    def socket_server(self) -> socketio.AsyncServer:
        """The Socket.IO server, made at its first request: python-socketio is 60 ms of the daemon's start-up,
        and most daemons never serve this API."""
        if self.sio is None:
            self.sio = create_socketio()
        return self.sio

    async def _socketio_request(self, request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await self.socket_server().eio.handle_request(request)
        return response

    def create_app(self) -> web.Application:
        """An aiohttp application serving the LXC Tools API over this front end."""
        app = web.Application(middlewares=[error_middleware(lxc_error_body, name="lxc_tools")], client_max_size=BODY_MAX)
        app.add_routes(routes)
        # The routes python-socketio's attach() adds (GET, POST, OPTIONS), relative to this application:
        # /socket.io/ on its own port, /compat/lxc-tools/socket.io/ when mounted on the main port.
        app.router.add_get("/socket.io/", self._socketio_request)
        app.router.add_post("/socket.io/", self._socketio_request)
        app.router.add_route("OPTIONS", "/socket.io/", self._socketio_request)
        app.on_shutdown.append(self._close_sockets)
        return app
