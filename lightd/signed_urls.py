"""Signed one-shot URLs: a panel hands a browser a link that downloads or uploads one file of a volume, or
downloads one backup, without the node token.

Each URL carries an HS256 JWT (as Wings' are) signed with a key derived from the node token (HMAC of the
token with a fixed label, so the token itself never signs anything a client can see): its `jti`, expiry, and
the purpose and target it was minted for. The URL names its target in the query string too; a redeem checks
the signature (HS256 only: SECURITY no `alg: none` and no algorithm confusion), the expiry, the purpose (the
route) and that the target asked is the target signed (SECURITY: token confusion — a token minted for one
purpose or target is refused anywhere else); once the route has opened its target, the `jti` is recorded
as used in SQLite (`signed_url_uses`, a
namespaced table on the core connection) until it expires: a second use, before or after a daemon restart,
is refused. Of two racing uses exactly one wins (the insert of the `jti` is the decision).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lightd.errors import SignedUrlExpired, SignedUrlInvalid, SignedUrlMismatch, SignedUrlUsed, ValidationFailed
from lightd.namespaced_store import NamespacedStore
from lightd.store import Store

SignedPurpose = Literal["file-download", "file-upload", "backup-download"]
ROUTES: dict[str, str] = {"file-download": "/download/file", "file-upload": "/upload/file",
                          "backup-download": "/download/backup"}
"""The route that serves each purpose."""
ALGORITHM = "HS256"
ISSUER = "lightd"
KEY_LABEL = b"lightd signed one-shot URLs v1"
MAX_TOKEN_CHARS = 4096
"""A longer `token` is not one lightd made (and is not decoded)."""


@dataclass(frozen=True)
class Target:
    """What a signed URL opens: the purpose and its object (a volume path, or a server's backup)."""

    purpose: str
    volume_id: str | None = None
    path: str = ""
    """file-download: the file; file-upload: the folder files go into ("" the volume root)."""
    container_id: str | None = None
    backup_id: str | None = None

    def query(self) -> dict[str, str]:
        """The target as the URL's query string names it (the route's parameters, without the token)."""
        if self.purpose == "backup-download":
            return {"container_id": self.container_id or "", "backup_id": self.backup_id or ""}
        where = "path" if self.purpose == "file-download" else "directory"
        return {"volume_id": self.volume_id or "", where: self.path}


@dataclass(frozen=True)
class SignedUrl:
    token: str
    id: str
    expires_at: float
    target: Target


@dataclass(frozen=True)
class Grant:
    """A checked signed URL, not yet used: its target, `jti` and expiry."""

    target: Target
    jti: str
    expires_at: float


class UsedUrls(NamespacedStore):
    """The `jti`s of signed URLs already used, each kept until its URL expires."""

    NAMESPACE = "signed_urls"
    MIGRATIONS = (
        """
        CREATE TABLE IF NOT EXISTS signed_url_uses (
            jti         TEXT PRIMARY KEY,
            purpose     TEXT NOT NULL,
            used_at     REAL NOT NULL,
            expires_at  REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS signed_url_uses_expiry ON signed_url_uses(expires_at);
        """,
    )

    async def record(self, jti: str, purpose: str, expires_at: float) -> bool:
        """Record a use; False when the `jti` was used already."""
        await self.ensure()
        return await self.core.write(
            "INSERT OR IGNORE INTO signed_url_uses (jti, purpose, used_at, expires_at) VALUES (?, ?, ?, ?)",
            (jti, purpose, time.time(), expires_at)) == 1

    async def was_used(self, jti: str) -> bool:
        if not await self.ensure(create=False):
            return False
        return await self.core.fetchone("SELECT 1 AS one FROM signed_url_uses WHERE jti = ?", (jti,)) is not None

    async def forget_expired(self, now: float) -> int:
        """Drop the uses of URLs expired by `now` (an expired URL is refused for its expiry anyway)."""
        if not await self.ensure(create=False):
            return 0
        return await self.core.write("DELETE FROM signed_url_uses WHERE expires_at < ?", (now,))


def _used() -> SignedUrlUsed:
    return SignedUrlUsed("this URL was already used (signed URLs are single-use)")


def signing_key(node_token: str) -> bytes:
    return hmac.new(node_token.encode(), KEY_LABEL, hashlib.sha256).digest()


class SignedUrls:
    """Mints signed one-shot URLs, checks them and marks them used."""

    def __init__(self, store: Callable[[], Store], node_token: str, max_ttl: int) -> None:
        self.used = UsedUrls(store)
        self.max_ttl = max_ttl
        self._key = signing_key(node_token)

    async def issue(self, target: Target, ttl_seconds: int) -> SignedUrl:
        """Sign a one-shot token for `target`, valid `ttl_seconds` (1 to tokens.signed_url_max_ttl_seconds)."""
        if not 1 <= ttl_seconds <= self.max_ttl:
            raise ValidationFailed(f"ttl_seconds: must be between 1 and {self.max_ttl} seconds",
                                   details={"field": "ttl_seconds"})
        now = time.time()
        await self.used.forget_expired(now)  # the table holds live URLs' uses only
        jti = secrets.token_hex(16)
        expires_at = int(now) + ttl_seconds
        claims = {"iss": ISSUER, "jti": jti, "iat": int(now), "exp": expires_at, "purpose": target.purpose,
                  "volume_id": target.volume_id, "path": target.path, "container_id": target.container_id,
                  "backup_id": target.backup_id}
        import jwt  # here, not at the top: jwt and cryptography are 30 ms of the daemon's start-up

        return SignedUrl(jwt.encode(claims, self._key, algorithm=ALGORITHM), jti, expires_at, target)

    async def check(self, token: str | None, asked: Target) -> Grant:
        """What `token` grants if it is valid for `asked` and unused (nothing is recorded yet: `consume` does,
        once the target is open); SignedUrlInvalid, SignedUrlExpired, SignedUrlMismatch or SignedUrlUsed."""
        claims = self._verify(token)
        signed = Target(purpose=claims.get("purpose", ""), volume_id=claims.get("volume_id"),
                        path=claims.get("path") or "", container_id=claims.get("container_id"),
                        backup_id=claims.get("backup_id"))
        if signed.purpose != asked.purpose:
            raise SignedUrlMismatch(f"this URL was signed for {signed.purpose or 'another purpose'}, not {asked.purpose}")
        if signed.query() != asked.query():
            raise SignedUrlMismatch("this URL was signed for another target")
        grant = Grant(signed, claims["jti"], float(claims["exp"]))
        if await self.used.was_used(grant.jti):
            raise _used()
        return grant

    async def consume(self, grant: Grant) -> None:
        """Mark the URL used; SignedUrlUsed when another request used it first."""
        if not await self.used.record(grant.jti, grant.target.purpose, grant.expires_at):
            raise _used()

    def _verify(self, token: str | None) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise SignedUrlInvalid("missing or malformed signed URL token")
        import jwt  # here, not at the top: jwt and cryptography are 30 ms of the daemon's start-up

        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], issuer=ISSUER, leeway=0,
                                options={"require": ["exp", "iat", "jti", "iss"]})
        except jwt.ExpiredSignatureError:
            raise SignedUrlExpired("this signed URL has expired") from None
        except jwt.InvalidTokenError:
            raise SignedUrlInvalid("invalid signed URL token") from None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("exp"), int):
            raise SignedUrlInvalid("invalid signed URL token")
        return claims
