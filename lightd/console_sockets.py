"""ConsoleSockets: the open console sockets, by container — the per-container cap, the close of the sockets
of a revoked token, and the close of all at shutdown. The sockets themselves (and their close codes) are
lightd.api.console_ws's."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lightd.auth import Principal
    from lightd.servers.server import Server


class ConsoleSession(Protocol):
    """What the registry needs of one open socket (lightd.api.console_ws.ConsoleSocket)."""

    server: Server
    principal: Principal
    close_task: asyncio.Task[None] | None

    def request_close(self, code: int, reason: str) -> None: ...

    def token_revoked(self) -> None: ...


class ConsoleSockets:
    """The open console sockets, by container: the per-container cap and the close at shutdown."""

    def __init__(self, max_per_container: int) -> None:
        self.max_per_container = max_per_container
        self._by_server: dict[str, set[ConsoleSession]] = collections.defaultdict(set)

    def add(self, sock: ConsoleSession) -> bool:
        """Register `sock`; False when its container already has the maximum."""
        current = self._by_server[sock.server.id]
        if len(current) >= self.max_per_container:
            return False
        current.add(sock)
        return True

    def discard(self, sock: ConsoleSession) -> None:
        current = self._by_server.get(sock.server.id)
        if current is not None:
            current.discard(sock)
            if not current:
                del self._by_server[sock.server.id]

    def count(self, server_id: str) -> int:
        return len(self._by_server.get(server_id, ()))

    def close_token(self, token_id: str) -> int:
        """Close every socket opened with the temporary token `token_id`, now revoked; how many."""
        socks = [s for group in self._by_server.values() for s in group if s.principal.token_id == token_id]
        for sock in socks:
            sock.token_revoked()
        return len(socks)

    async def close_all(self, code: int, reason: str, *, timeout: float) -> None:
        """Close every socket (daemon shutdown), waiting up to `timeout` seconds for their closes."""
        socks = [s for group in self._by_server.values() for s in group]
        for sock in socks:
            sock.request_close(code, reason)
        closing = [s.close_task for s in socks if s.close_task is not None]
        if closing:
            await asyncio.wait(closing, timeout=timeout)
