"""TransferService: both sides of server transfers on this node, opened (settling what a dead daemon left)
before the servers load and closed with them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lightd.config import Config
from lightd.events import EventBus
from lightd.store import Store
from lightd.transfers.source import TransferSource
from lightd.transfers.store import TransferStore
from lightd.transfers.target import TransferTarget

if TYPE_CHECKING:
    from lightd.servers.environment import Environment
    from lightd.servers.manager import ServerManager


class TransferService:
    """`source`: this node's servers moving away; `target`: servers arriving here."""

    def __init__(self, config: Config, store: Store, events: EventBus, servers: Callable[[], ServerManager],
                 env: Callable[[], Environment]) -> None:
        self.store = TransferStore(lambda: store)
        self.source = TransferSource(config, self.store, events, servers)
        self.target = TransferTarget(config, self.store, events, servers, env)

    async def open(self) -> None:
        """Settle the transfers a dead daemon left: sent ones failed (their servers offline again), received
        ones removed."""
        await self.target.open()
        await self.source.open()

    async def close(self) -> None:
        await self.source.close()
        await self.target.close()

    async def forget_server(self, server_id: str) -> None:
        """A server being deleted: its transfer (if one runs) is cancelled first."""
        await self.source.forget_server(server_id)
