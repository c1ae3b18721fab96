"""Tokens: the node token from config, and temporary tokens (hashed in the store, with an expiry, a
purpose and an optional container scope)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from lightd.config import TOKEN_PREFIX, is_valid_token_format
from lightd.errors import Forbidden, Unauthorized, ValidationFailed
from lightd.store import Store

Purpose = Literal["all", "api", "websocket"]
PURPOSES: tuple[str, ...] = ("all", "api", "websocket")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    node: bool
    purpose: str = "all"
    container: str | None = None
    expires_at: float | None = None

    def allows(self, purpose: str, container: str | None) -> bool:
        if self.node:
            return True
        if self.purpose not in ("all", purpose):
            return False
        return self.container is None or self.container == container


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

    async def issue(self, *, container: str | None, purpose: str, ttl_seconds: int | None) -> tuple[str, float]:
        """Mint a temporary token; returns (token, expires_at)."""
        ttl = self.default_ttl if ttl_seconds is None else ttl_seconds
        if ttl < 1 or ttl > self.max_ttl:
            raise ValidationFailed(f"ttl_seconds: must be between 1 and {self.max_ttl}", details={"field": "ttl_seconds"})
        if purpose not in PURPOSES:
            raise ValidationFailed(f"purpose: must be one of {', '.join(PURPOSES)}", details={"field": "purpose"})
        await self.purge_expired()  # the table holds recent tokens only, not every token ever minted
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        await self.store.insert_token(hash_token(token), container, purpose, now, now + ttl)
        return token, now + ttl

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
        principal = Principal(node=False, purpose=row["purpose"], container=row["container"], expires_at=row["expires_at"])
        if not principal.allows(purpose, container):
            raise Forbidden("token is not valid for this resource")
        return principal

    async def purge_expired(self) -> int:
        """Forget tokens that expired over `max_ttl` ago (recently expired ones still answer "expired")."""
        return await self.store.delete_expired_tokens(time.time() - self.max_ttl)
