"""Tokens: the node token from config, and temporary tokens (hashed in the store, with an expiry, a
purpose and an optional container scope)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lightd.config import TOKEN_PREFIX, is_valid_token_format
from lightd.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from lightd.store import Store

Purpose = Literal["all", "api", "websocket", "sftp", "transfer"]
PURPOSES: tuple[str, ...] = ("all", "api", "websocket", "sftp", "transfer")
EXACT_PURPOSES = frozenset({"sftp", "transfer"})
"""Purposes only a token minted for them opens (an `all` token does not: it would be a second way in)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    node: bool
    purpose: str = "all"
    container: str | None = None
    expires_at: float | None = None
    token_id: str | None = None
    """The public id of the temporary token (None for the node token)."""

    def allows(self, purpose: str, container: str | None) -> bool:
        if self.node:
            return True
        if self.purpose != purpose and (self.purpose != "all" or purpose in EXACT_PURPOSES):
            return False
        return self.container is None or self.container == container


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just minted: the only time its value is known outside the client."""

    token: str
    id: str
    expires_at: float


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def mask_token(token: str) -> str:
    """What may appear in logs or API answers for a token."""
    return token[: len(TOKEN_PREFIX) + 2] + "…" if token else ""


class TokenService:
    """Checks the node token and issues and checks temporary tokens."""

    def __init__(self, store: Store, node_token: str, default_ttl: int, max_ttl: int) -> None:
        self.store = store
        self.node_token = node_token
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.booted_at = time.time()
        self.on_revoke: list[Callable[[str], None]] = []
        """Called with a token's id when it is revoked (the SFTP server ends the sessions it opened)."""

    async def issue(self, *, container: str | None, purpose: str, ttl_seconds: int | None, remove_on_use: bool = False,
                    ttl_field: str = "ttl_seconds") -> IssuedToken:
        """Mint a temporary token; with `remove_on_use`, a single-use one. `ttl_field`: the request field
        the ttl came from, named when it is out of bounds."""
        ttl = self.default_ttl if ttl_seconds is None else ttl_seconds
        if ttl < 1 or ttl > self.max_ttl:
            raise ValidationFailed(f"{ttl_field}: must be between 1 and {self.max_ttl} seconds",
                                   details={"field": ttl_field})
        if purpose not in PURPOSES:
            raise ValidationFailed(f"purpose: must be one of {', '.join(PURPOSES)}", details={"field": "purpose"})
        if purpose == "sftp" and container is None:
            raise ValidationFailed("container: an sftp token must be scoped to one container", details={"field": "container"})
        if purpose == "transfer" and (container is not None or remove_on_use):
            # The server does not exist here yet, and a transfer uses its token twice (prepare, then stream).
            raise ValidationFailed("purpose: a transfer token is neither scoped to a container nor single-use",
                                   details={"field": "purpose"})
        await self.purge_expired()  # the table holds recent tokens only, not every token ever minted
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        # The public id is random, not derived from the token or its hash: it reveals nothing about either.
        token_id = secrets.token_hex(8)
        now = time.time()
        await self.store.insert_token(hash_token(token), container, purpose, now, now + ttl, token_id, remove_on_use)
        return IssuedToken(token, token_id, now + ttl)

    async def live(self) -> list[dict[str, Any]]:
        """The temporary tokens not yet expired: id, purpose, container, created_at, expires_at."""
        return await self.store.live_tokens(time.time())

    async def revoke(self, token_id: str) -> dict[str, Any]:
        """Forget a temporary token, so that its next use is 401; NotFound when there is none by that id."""
        row = await self.store.delete_token(token_id)
        if row is None:
            raise NotFound(f"token {token_id} not found", details={"id": token_id})
        for listener in self.on_revoke:
            listener(token_id)
        return row

    async def authenticate(self, token: str | None, *, purpose: str, container: str | None) -> Principal:
        """The principal for `token` used for `purpose` on `container`; Unauthorized or Forbidden otherwise."""
        if not token:
            raise Unauthorized("missing token")
        if not is_valid_token_format(token):
            raise Unauthorized("invalid token")
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.node_token.encode()):
            return Principal(node=True)
        row = await self.store.get_token(hash_token(token))
        if row is None:
            raise Unauthorized("invalid token")
        now = time.time()
        if row["expires_at"] <= now:
            raise Unauthorized("token expired")
        if purpose == "websocket" and row["created_at"] < self.booted_at:
            # Wings: a socket token minted before the daemon booted is not honoured.
            raise Unauthorized("token was issued before the daemon started")
        principal = Principal(node=False, purpose=row["purpose"], container=row["container"], expires_at=row["expires_at"],
                              token_id=row["id"])
        if not principal.allows(purpose, container):
            raise Forbidden("token is not valid for this resource")
        # A single-use token is deleted by its first successful use; of two racing uses only one deletes it.
        if row.get("remove_on_use") and not await self.store.consume_token(row["hash"]):
            raise Unauthorized("invalid token")
        return principal

    async def purge_expired(self) -> int:
        """Forget tokens that expired over `max_ttl` ago (recently expired ones still answer "expired")."""
        return await self.store.delete_expired_tokens(time.time() - self.max_ttl)
