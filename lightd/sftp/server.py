"""The SFTP server: an asyncssh listener, its logins, and the live sessions it ends.

Login (as Wings): the username is `<name>.<server id>`; the password is a temporary token minted for
purpose `sftp` and scoped to that server (`POST /auth/tokens`), or, when `remote.enabled`, whatever the
panel accepts at `POST {remote.url}/sftp/auth {type, username, password, ip}` (it answers 200
`{"server": id, "user": ..., "permissions": [...]}`). Failed logins are rate-limited (limits.py). Only
SFTP is served: no shell, exec, scp or forwarding. A revoked token or a deleted server closes the SSH
connections that logged in with it; a token that merely expires ends no session (it bounds the login).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import asyncssh
import orjson
from aiohttp import web

from lightd import keys
from lightd.config import Config, RemoteConfig, is_valid_token_format
from lightd.config_features import SftpConfig
from lightd.errors import LightdError
from lightd.events import EventBus, Subscription
from lightd.servers.events import ServerDeleted, SftpActivity
from lightd.sftp.limits import LoginLimiter, SessionCounts
from lightd.sftp.session import SftpSession
from lightd.tasks import TaskOwner
from lightd.volumes.quota import WriteBudget
from lightd.volumes.sandbox import Sandbox

if TYPE_CHECKING:
    from lightd.auth import TokenService
    from lightd.servers.manager import ServerManager
    from lightd.volumes.service import VolumeService

log = logging.getLogger(__name__)

READ_ONLY_STATES = frozenset({"suspended", "restoring", "transferring"})
"""Server states (by name) in which SFTP sessions may read but not change anything."""
WRITE_PERMISSIONS = frozenset({"*", "file.create", "file.update", "file.delete"})
"""A panel login holding none of these gets a read-only session."""
MAX_USERNAME = 256
MAX_PANEL_ANSWER = 64 * 1024
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Login:
    """Who a logged-in SSH connection acts as."""

    server_id: str
    username: str
    ip: str
    user_key: str
    """What `max_sessions_per_user` counts: the token, or the panel user on this server."""
    token_id: str | None = None
    read_only: bool = False


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The host key at `path`; a new ed25519 key written there (0600) when there is none. Blocking."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # a private key readable by others is not one
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    log.info("sftp: generated host key %s (%s)", path, key.get_fingerprint())
    return key


class SshConnection(asyncssh.SSHServer):
    """One client connection: its address, its login and its SFTP sessions."""

    def __init__(self, owner: SftpServer) -> None:
        self.owner = owner
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ip = ""
        self.login: Login | None = None
        self.sessions: set[SftpSession] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else ""
        if not self.owner.connection_opened(self):
            asyncio.get_running_loop().call_soon(conn.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connection_closed(self)

    def begin_auth(self, username: str) -> bool:
        return True  # every login needs a password

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        self.login = await self.owner.authenticate(username, password, self.ip)
        return self.login is not None

    def close(self) -> None:
        for session in self.sessions:
            session.ended = True  # requests still queued fail at once
        if self.conn is not None:
            self.conn.close()


class SftpServer:
    """The SFTP listener, logins and the registry of live sessions."""

    def __init__(self, config: SftpConfig, host_key_path: Path, *, tokens: TokenService, servers: ServerManager,
                 volumes: VolumeService, events: EventBus, remote: Callable[[], RemoteConfig]) -> None:
        self.config = config
        self.host_key_path = host_key_path
        self.tokens = tokens
        self.servers = servers
        self.volumes = volumes
        self.events = events
        self.remote = remote
        self.limiter = LoginLimiter(config.login_failures_per_ip, config.login_failures_per_user,
                                    config.login_window_seconds, config.login_tracked_max)
        self.counts = SessionCounts(config.max_sessions_per_user)
        self.connections: set[SshConnection] = set()
        self.port = config.port
        self._tasks = TaskOwner("sftp")
        self._listener: asyncssh.SSHAcceptor | None = None
        self._http: aiohttp.ClientSession | None = None
        self._sub: Subscription | None = None
        self._closing = False

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load (or make) the host key, listen, and follow revocations and deletions."""
        key = await asyncio.to_thread(load_or_create_host_key, self.host_key_path)
        self._http = aiohttp.ClientSession()
        self.tokens.on_revoke.append(self.token_revoked)
        self._sub = self.events.subscribe(kinds={"event"})
        self._tasks.spawn(self._watch_deletions(self._sub), name="deletions")
        self._listener = await asyncssh.create_server(
            lambda: SshConnection(self), self.config.host, self.config.port, server_host_keys=[key],
            sftp_factory=self._new_session, allow_scp=False, allow_pty=False, agent_forwarding=False,
            x11_forwarding=False, login_timeout=self.config.login_timeout_seconds, keepalive_interval=30,
            keepalive_count_max=3, server_version="lightd")
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("sftp: listening on %s:%d", self.config.host, self.port)

    async def close(self) -> None:
        """Stop listening and end every session (their open files are closed)."""
        self._closing = True
        if self.token_revoked in self.tokens.on_revoke:
            self.tokens.on_revoke.remove(self.token_revoked)
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
        closing = [c.conn.wait_closed() for c in self.connections if c.conn is not None]
        for connection in list(self.connections):
            connection.close()
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=CLOSE_TIMEOUT)
        if self._sub is not None:
            self._sub.close()
        await self._tasks.close()
        if self._http is not None:
            await self._http.close()

    def connection_opened(self, connection: SshConnection) -> bool:
        if self._closing or len(self.connections) >= self.config.max_connections:
            log.warning("sftp: connection from %s refused (%s)", connection.ip,
                        "shutting down" if self._closing else f"{len(self.connections)} connections open")
            return False
        self.connections.add(connection)
        return True

    def connection_closed(self, connection: SshConnection) -> None:
        self.connections.discard(connection)

    # -- logins --------------------------------------------------------------------------------------
    async def authenticate(self, username: str, password: str, ip: str) -> Login | None:
        """The login for these credentials, or None (counted against the rate limits)."""
        if self._closing:
            return None
        if self.limiter.blocked(ip, username):
            log.warning("sftp: login of %r from %s refused unchecked: too many failed logins", username[:MAX_USERNAME], ip)
            return None
        try:
            login = await self._check(username, password, ip)
        except Exception:  # noqa: BLE001 - a bug in a check must refuse the login, not crash the connection
            log.exception("sftp: login check of %r failed", username[:MAX_USERNAME])
            login = None
        if login is None:
            self.limiter.failed(ip, username[:MAX_USERNAME])
            log.info("sftp: failed login of %r from %s", username[:MAX_USERNAME], ip)
            return None
        self.activity(login, "login", ())
        return login

    def server_of(self, username: str) -> str | None:
        """The server a `<name>.<server id>` username names (the first split at a dot naming one)."""
        for index, char in enumerate(username):
            if char == ".":
                server = self.servers.find(username[index + 1:])
                if server is not None and not server.deleted:
                    return server.id
        return None

    async def _check(self, username: str, password: str, ip: str) -> Login | None:
        if len(username) > MAX_USERNAME:
            return None
        if is_valid_token_format(password):
            server_id = self.server_of(username)
            if server_id is None:
                return None
            try:
                principal = await self.tokens.authenticate(password, purpose="sftp", container=server_id)
            except LightdError:
                return None
            # SECURITY: token confusion — only a token minted for sftp and this server; never the node token.
            if principal.node or principal.purpose != "sftp" or principal.container != server_id:
                return None
            return Login(server_id, username, ip, f"token:{principal.token_id}", token_id=principal.token_id)
        remote = self.remote()
        if remote.enabled and remote.url:
            return await self._panel_login(remote, username, password, ip)
        return None

    async def _panel_login(self, remote: RemoteConfig, username: str, password: str, ip: str) -> Login | None:
        """Wings' flow: the panel decides, and names the server the login is for."""
        assert self._http is not None
        body = {"type": "password", "username": username, "password": password, "ip": ip}
        try:
            async with self._http.post(
                remote.url.rstrip("/") + "/sftp/auth", data=orjson.dumps(body),
                headers={"Authorization": f"Bearer {remote.token}", "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=remote.request_timeout_seconds),
            ) as resp:
                if resp.status != 200:
                    return None
                answer = orjson.loads(await resp.content.read(MAX_PANEL_ANSWER))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("sftp: panel login check failed: %s", type(exc).__name__)
            return None
        server_id = answer.get("server") if isinstance(answer, dict) else None
        if not isinstance(server_id, str) or not username.endswith("." + server_id):
            return None
        server = self.servers.find(server_id)
        if server is None or server.deleted:
            return None
        permissions = answer.get("permissions")
        read_only = isinstance(permissions, list) and not WRITE_PERMISSIONS.intersection(
            p for p in permissions if isinstance(p, str))
        user = answer.get("user")
        user_key = f"panel:{user if isinstance(user, str) else username}:{server_id}"
        return Login(server_id, username, ip, user_key, read_only=read_only)

    # -- sessions ------------------------------------------------------------------------------------
    async def _new_session(self, chan: asyncssh.SSHServerChannel) -> SftpSession:
        """asyncssh's sftp_factory: a session over the login's volume, or a refused one (channel closed)."""
        connection: SshConnection = chan.get_connection().get_owner()
        login = connection.login
        server = self.servers.find(login.server_id) if login is not None else None
        if login is None or server is None or server.deleted or self._closing:
            return self._refused(chan, login, "the server is gone")
        if not self.counts.acquire(login.user_key):
            return self._refused(chan, login, f"already {self.counts.max_per_user} sessions open")
        # the live denylist of the volume: a template change or a server deleted applies to open sessions too
        box = Sandbox(server.volume_path, self.servers.volumes.denylist(server.spec.volume_id))
        try:
            await asyncio.to_thread(box.__enter__)
        except OSError:
            self.counts.release(login.user_key)
            return self._refused(chan, login, "the volume is missing")
        session = SftpSession(chan, login, self, box)
        connection.sessions.add(session)
        return session

    def _refused(self, chan: asyncssh.SSHServerChannel, login: Login | None, why: str) -> SftpSession:
        # SECURITY: never asyncssh's own SFTPServer (it serves the host's files): an inert session whose
        # sandbox was never opened, on a channel being closed.
        log.warning("sftp: session of %r refused: %s", login.username if login else None, why)
        session = SftpSession(chan, login, self, Sandbox(Path("/nonexistent")))  # type: ignore[arg-type]
        session.closed = session.ended = True
        chan.close()
        return session

    def session_ended(self, session: SftpSession) -> None:
        self.counts.release(session.login.user_key)
        connection: SshConnection = session.channel.get_connection().get_owner()
        connection.sessions.discard(session)

    def check_alive(self, session: SftpSession) -> None:
        """Refuse a request of a session that was ended, or whose server is gone (then end its login)."""
        if session.ended:
            raise asyncssh.SFTPConnectionLost("session ended")
        server = self.servers.find(session.login.server_id)
        if server is None or server.deleted:
            self.end_logins(lambda login: login.server_id == session.login.server_id, "server deleted")
            raise asyncssh.SFTPConnectionLost("the server was deleted")

    def read_only_reason(self, login: Login) -> str | None:
        """Why the login may not change files now, or None."""
        if login.read_only:
            return "the panel granted no write permission"
        if login.server_id in self.config.read_only_servers:
            return "the server is listed in sftp.read_only_servers"
        server = self.servers.find(login.server_id)
        if server is None:
            return "the server was deleted"
        if server.state in READ_ONLY_STATES:
            return f"the server is {server.state}"
        return None

    async def write_budget(self, login: Login) -> WriteBudget:
        """The disk-limit budget of one write operation to the login's volume."""
        try:
            return await self.volumes.write_budget(self.servers.get(login.server_id).spec.volume_id)
        except LightdError as exc:
            raise asyncssh.SFTPFailure(exc.message) from None

    def activity(self, login: Login, action: str, paths: tuple[str, ...]) -> None:
        """Report what a session did (remote sync turns it into a panel update)."""
        self.events.publish("event", login.server_id, SftpActivity(action, login.username, login.ip, paths))

    # -- ending sessions -----------------------------------------------------------------------------
    def end_logins(self, match: Callable[[Login], bool], reason: str) -> int:
        """Close every connection whose login matches (its sessions end); how many."""
        ended = [c for c in self.connections if c.login is not None and match(c.login)]
        for connection in ended:
            log.info("sftp: ending the connection of %r from %s: %s", connection.login.username, connection.ip, reason)
            connection.close()
        return len(ended)

    def token_revoked(self, token_id: str) -> None:
        self.end_logins(lambda login: login.token_id == token_id, "token revoked")

    async def _watch_deletions(self, sub: Subscription) -> None:
        async for event in sub:
            if isinstance(event.data, ServerDeleted) and event.server is not None:
                server_id = event.server
                self.end_logins(lambda login: login.server_id == server_id, "server deleted")


async def sftp_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the SFTP server, when enabled — after the servers are loaded, closed before them."""
    config: Config = app[keys.CONFIG]
    if not config.sftp.enabled:
        yield
        return
    sync = app[keys.SYNC]
    server = SftpServer(config.sftp, config.sftp_host_key_path, tokens=app[keys.TOKENS], servers=app[keys.SERVERS],
                        volumes=app[keys.VOLUMES], events=app[keys.EVENTS], remote=lambda: sync.config)
    await server.start()
    app[keys.SFTP] = server
    try:
        yield
    finally:
        await server.close()

