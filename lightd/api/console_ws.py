"""GET /ws/{container_id}: the console WebSocket. A refused upgrade request is upgraded and then closed with
4401/4403/4404 (a browser cannot read the status of a refused handshake, but it sees a close code); a plain
GET gets the same refusal as HTTP 401/403/404. After it, each socket has a drop-oldest queue bounded in
lines, fed by the event bus, and one writer task, so a slow client never slows the server or the other
clients. The writer sends everything queued in one transport write, each event's frames encoded once for
every socket. Message shapes: shared/spec/lightd-protocol.md."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Literal

from aiohttp import WSMsgType, web
from pydantic import BaseModel, Field

from lightd import keys
from lightd.api.console_protocol import (
    DEFAULT_LOG_LINES, Inbound, ProtocolError, TokenBucket, console_frames, frame_bytes, parse_inbound, text_frame,
)
from lightd.api.public import self_authenticated
from lightd.api.route_docs import documented
from lightd.auth import Principal
from lightd.config import ConsoleConfig
from lightd.cors import require_socket_origin
from lightd.errors import BadRequest, Conflict, Forbidden, LightdError, NotFound, Unauthorized
from lightd.events import LINE_KINDS, Event, Subscription
from lightd.http import bearer_token
from lightd.servers.events import ServerDeleted, ServerEvent
from lightd.servers.server import Server

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Close codes (lightd-protocol.md).
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_DELETED = 4404
CLOSE_TOO_MANY = 4429
CLOSE_GOING_AWAY = 1001
CLOSE_SEND_FAILED = 1011

# Bus kind -> outbound event name. Install output has its own event (Wings: "install output"), one line a frame.
OUTBOUND = {"console": "console", "install_log": "install_output", "stats": "stats", "event": "event",
            "daemon_message": "daemon_message"}
# A refusal before the session, by error type -> close code (and the HTTP status of a plain GET).
REFUSALS: tuple[tuple[type[LightdError], int], ...] = (
    (Unauthorized, CLOSE_TOKEN_EXPIRED), (Forbidden, CLOSE_FORBIDDEN), (NotFound, CLOSE_DELETED),
)
WAKE = "_wake"  # a marker put in the queue when a direct reply is waiting
REPLY_QUEUE = 32
EXPIRY_WARNING_SECONDS = 60.0
CLOSE_TIMEOUT = 5.0
HEARTBEAT_SECONDS = 30.0
WRITE_MAX_BYTES = 256 * 1024  # one transport write gathers queued frames up to about this much


def queue_size(console: ConsoleConfig) -> int:
    """Per-socket queue bound, in lines. At least one throttle window: a window's lines can arrive in one
    go, so a smaller queue would drop lines of a burst the throttle admitted even for fast clients. The
    lines are shared objects, so memory stays bounded per server, not per socket."""
    return max(console.send_queue, console.throttle_lines)


class ConsoleSocket:
    """One client's console connection: the bus subscription, the writer, the inbound handler."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, server: Server, principal: Principal) -> None:
        app = request.config_dict
        self.ws = ws
        self.transport = request.transport
        self.server = server
        self.principal = principal
        self.config = app[keys.CONFIG].console
        self.manager = app[keys.SERVERS]
        self.sampler = app[keys.STATS]
        self.events = app[keys.EVENTS]
        self.tasks = app[keys.TASKS]
        self.bucket = TokenBucket(self.config.inbound_rate, self.config.inbound_burst)
        self.protocol = request.protocol
        self.http_writer = request.writer  # its drain() waits while the client is not reading
        self.replies: collections.deque[bytes] = collections.deque(maxlen=REPLY_QUEUE)
        self.sub: Subscription | None = None
        self.batch = request.query.get("batch") in ("1", "true")
        self.close_task: asyncio.Task[None] | None = None

    # -- outbound ------------------------------------------------------------------------------------
    def reply(self, event: str, data: Any) -> None:
        """Queue a frame for this socket only (answers, errors); sent before queued bus events."""
        self.replies.append(text_frame(frame_bytes(event, data)))
        if self.sub is not None:
            self.sub.offer(Event(WAKE, self.server.id, None))

    def error(self, message: str) -> None:
        self.reply("error", {"message": message})

    def _wire(self, event: Event) -> bytes:
        """The frames of one bus event as bytes on the wire, made once per event for all the sockets in
        the same mode: a console chunk is one `console` frame per line, or one `console_batch` frame."""
        key = "ws-batch" if self.batch else "ws"
        data = event.encoded.get(key)
        if data is None:
            if event.kind == "console" and self.batch:
                data = text_frame(frame_bytes("console_batch", {"lines": event.data}, event.ts))
            elif event.kind in LINE_KINDS:
                data = console_frames(event.data, event.ts, OUTBOUND[event.kind])
            else:
                payload = event.data.wire if isinstance(event.data, ServerEvent) else event.data
                data = text_frame(frame_bytes(OUTBOUND[event.kind], payload, event.ts))
            event.encoded[key] = data
        return data

    async def _write(self) -> None:
        """The only task that sends data frames on this socket: everything queued goes out in one write."""
        assert self.sub is not None
        try:
            while (event := await self.sub.get()) is not None:
                parts = list(self.replies)
                self.replies.clear()
                size, deleted = 0, False
                while event is not None:
                    if event.kind != WAKE:
                        data = self._wire(event)
                        parts.append(data)
                        size += len(data)
                        if isinstance(event.data, ServerDeleted):
                            deleted = True
                            break
                        if size >= WRITE_MAX_BYTES:
                            break
                    event = self.sub.get_nowait()
                if parts and not await self._send(b"".join(parts)):
                    return
                if deleted:
                    # SECURITY: a deleted server's sessions end; 4404 tells clients not to reconnect.
                    self.request_close(CLOSE_DELETED, "container deleted")
                    return
        except ConnectionError as exc:
            # A send error closes that socket (and only that one).
            log.debug("%s: console socket send failed: %r", self.server.id, exc)
            self.request_close(CLOSE_SEND_FAILED, "send failed")

    def _deliver_now(self, event: Event) -> bool:
        """The bus's fast path: console output for a socket whose writer is idle, with nothing queued and a
        client that keeps up, is written at once (no task switch per chunk per socket). Anything else goes
        through the queue and the writer."""
        if (event.kind not in LINE_KINDS or self.replies or self.close_task is not None or self.ws.closed
                or self.transport is None or self.transport.is_closing() or self.protocol.writing_paused):
            return False
        self.transport.write(self._wire(event))
        return True

    async def _send(self, data: bytes) -> bool:
        """Write whole frames to the connection, then wait while the client is not reading (the queue in
        front of this socket drops the oldest lines meanwhile). False once the socket is closing."""
        if self.close_task is not None or self.ws.closed:
            return False  # nothing may follow a close frame
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection lost")
        self.transport.write(data)
        if self.protocol.writing_paused:
            await self.http_writer.drain()  # the wait aiohttp's own WebSocket writer uses
        return True

    def token_revoked(self) -> None:
        """The temporary token the socket was opened with is revoked: close with 4401."""
        self.request_close(CLOSE_TOKEN_EXPIRED, "token revoked")

    def request_close(self, code: int, reason: str) -> None:
        """Close the socket with `code` (once; later requests are ignored)."""
        if self.close_task is not None:
            return
        if self.sub is not None:
            self.sub.close()
        try:
            self.close_task = self.tasks.spawn(self._close(code, reason), name=f"ws-close:{self.server.id}")
        except RuntimeError:  # the task owner is closed: the daemon is past shutdown
            pass

    async def _close(self, code: int, reason: str) -> None:
        await close_bounded(self.ws, self.transport, code, reason)

    async def _expire(self, expires_at: float) -> None:
        """Warn about a temporary token shortly before it expires, then close with 4401."""
        warn_in = expires_at - time.time() - EXPIRY_WARNING_SECONDS
        await asyncio.sleep(max(warn_in, 0))
        remaining = max(expires_at - time.time(), 0)
        self.reply("daemon_message", f"Your token expires in {remaining:.0f} seconds; reconnect with a new token")
        await asyncio.sleep(max(expires_at - time.time(), 0))
        self.request_close(CLOSE_TOKEN_EXPIRED, "token expired")

    # -- session -------------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Send the greeting (stats, then the log tail), then read inbound frames until the socket ends."""
        self.sub = self.events.subscribe(server=self.server.id, kinds=set(OUTBOUND), maxsize=queue_size(self.config))
        self.sub.deliver_now = self._deliver_now
        # Taken with no await since subscribing: every line is in the tail or in the queue, never both.
        tail = self.server.history.tail(DEFAULT_LOG_LINES)
        self.reply("stats", await self.sampler.payload(self.server))
        self.reply("logs", {"lines": tail})
        owned = [self.tasks.spawn(self._write(), name=f"ws-writer:{self.server.id}")]
        if self.principal.expires_at is not None:
            owned.append(self.tasks.spawn(self._expire(self.principal.expires_at), name=f"ws-expiry:{self.server.id}"))
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY and self._admit():
                    self.error("binary frames are not supported")
        finally:
            self.sub.close()
            if self.close_task is not None:
                await asyncio.wait([self.close_task], timeout=CLOSE_TIMEOUT + 1)
            for task in owned:
                task.cancel()
            await asyncio.wait(owned, timeout=CLOSE_TIMEOUT)

    def _admit(self) -> bool:
        """Inbound rate limit: excess is dropped, with one `error` frame per burst of excess."""
        if self.bucket.admit():
            return True
        if self.bucket.take_notice():
            self.error("rate limited: message dropped")
        return False

    async def _on_text(self, text: str) -> None:
        if not self._admit():
            return
        try:
            inbound = parse_inbound(text)
        except ProtocolError as exc:
            self.error(str(exc))
            return
        await self._dispatch(inbound)

    async def _dispatch(self, inbound: Inbound) -> None:
        server_id = self.server.id
        try:
            if inbound.action == "send_command":
                try:
                    await self.manager.send_command(server_id, inbound.value)
                except Conflict as exc:
                    self.reply("daemon_message", f"Command not sent: {exc}")
            elif inbound.action == "power":
                # The action runs as an owned task: a client that disconnects does not cut it in half.
                await self.manager.power(server_id, inbound.value)
            elif inbound.action == "request_logs":
                self.reply("logs", {"lines": self.server.history.tail(inbound.value)})
            elif inbound.action == "request_stats":
                self.reply("stats", await self.sampler.payload(self.server))
        except LightdError as exc:
            self.error(str(exc))


async def close_bounded(ws: web.WebSocketResponse, transport: asyncio.Transport | None, code: int, reason: str) -> None:
    """Close `ws` with `code`; a client that does not answer within CLOSE_TIMEOUT is dropped."""
    # The reason is at most 123 bytes (RFC 6455 5.5), cut on a character boundary.
    message = reason.encode()[:123].decode("utf-8", "ignore").encode()
    try:
        # Bounded: a client that never reads must not hold the close (or the shutdown) forever.
        await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        log.debug("console socket close: %r", exc)
        # A client that never reads never completes the closing handshake: drop the connection, or
        # its handler (and a graceful shutdown) would wait for the heartbeat.
        if transport is not None:
            transport.abort()


async def _refuse(request: web.Request, code: int, reason: str) -> web.WebSocketResponse:
    """Upgrade, then close at once with `code`: a browser cannot read the status of a refused handshake,
    but it sees a close code and its reason. Nothing is subscribed or spawned for a refused socket."""
    ws = web.WebSocketResponse(compress=False, timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    await close_bounded(ws, request.transport, code, reason)
    return ws


class ConsoleSocketQuery(BaseModel):
    """What the socket reads from its query string (itself: it is self-authenticated)."""

    token: str | None = Field(default=None, description="The node token or a temporary token of purpose all or "
                              "websocket (browsers cannot set headers); or send `Authorization: Bearer`.")
    batch: Literal["1", "true"] | None = Field(default=None, description="Console output as one `console_batch` "
                                               "frame per chunk of lines, rather than one `console` frame a line.")


UPGRADE_DESCRIPTION = (
    "Upgrade to the console WebSocket of one container (`Connection: Upgrade`, `Upgrade: websocket`); its messages "
    "are described in the Lightd protocol (`shared/spec/lightd-protocol.md`). A refused socket is upgraded and then "
    "closed at once, so that a browser can read why: close code 4401 for a missing, invalid, expired or revoked "
    "token (also when a temporary token expires or is revoked later), 4403 for a token of another container or of "
    "purpose api or a browser page of an origin not in api.cors_origins, 4404 for an unknown container (also when it is deleted later: do not reconnect), 4429 for too "
    "many sockets on this container (console.max_sockets). A plain GET without the upgrade gets "
    "the same refusal as HTTP 401, 403 or 404, and 400 when it is allowed in."
)


@routes.get("/ws/{container_id}")
@self_authenticated
@documented(status=101, own_query=ConsoleSocketQuery, description=UPGRADE_DESCRIPTION)
async def console_socket(request: web.Request) -> web.StreamResponse:
    """Upgrade to the console socket of one container (token in `?token=` or `Authorization: Bearer`)."""
    container_id = request.match_info["container_id"]
    config = request.config_dict[keys.CONFIG].console
    # No permessage-deflate (as Wings): the socket writes its frames itself, encoded once for all clients.
    ws = web.WebSocketResponse(max_msg_size=config.max_frame_bytes, heartbeat=HEARTBEAT_SECONDS, compress=False)
    upgrade = ws.can_prepare(request).ok
    try:
        require_socket_origin(request)  # api.cors_origins: a refused page's socket closes with 4403
        token = request.query.get("token") or bearer_token(request)
        principal = await request.config_dict[keys.TOKENS].authenticate(token, purpose="websocket",
                                                                        container=container_id)
        server = request.config_dict[keys.SERVERS].get(container_id)
    except LightdError as exc:
        code = next((code for kind, code in REFUSALS if isinstance(exc, kind)), None)
        if not upgrade or code is None:
            raise  # a plain GET: the same refusal as HTTP (401/403/404)
        # The reason never echoes the requested id back.
        return await _refuse(request, code, "container not found" if code == CLOSE_DELETED else str(exc))
    if not upgrade:
        raise BadRequest("expected a WebSocket upgrade")
    sockets = request.config_dict[keys.CONSOLE_SOCKETS]
    sock = ConsoleSocket(request, ws, server, principal)
    if not sockets.add(sock):
        return await _refuse(request, CLOSE_TOO_MANY, "too many sockets for this container")
    try:
        await ws.prepare(request)
        await sock.serve()
    finally:
        sockets.discard(sock)
    return ws


async def close_console_sockets(app: web.Application) -> None:
    """on_shutdown: every console socket closes with 1001. Never raises: a raising on_shutdown step would end
    aiohttp's shutdown there, before any cleanup_ctx (the store's close among them)."""
    sockets = app.get(keys.CONSOLE_SOCKETS)
    if sockets is None:
        return
    try:
        await sockets.close_all(CLOSE_GOING_AWAY, "daemon shutting down", timeout=CLOSE_TIMEOUT + 1)
    except Exception:
        log.exception("closing the console sockets failed; shutdown goes on")
