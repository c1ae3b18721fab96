"""/auth/tokens: temporary tokens — minted, listed and revoked by the node token only."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lightd import keys
from lightd.api.route_docs import View, documented
from lightd.auth import Purpose
from lightd.config import TokenConfig
from lightd.errors import Forbidden
from lightd.http import json_response, read_model
from lightd.timestamps import rfc3339

routes = web.RouteTableDef()


_DURATION = re.compile(r"^\s*([0-9]{1,12})\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: Any) -> int:
    """Seconds of upstream Lightd's `ttl`: "30s", "10m", "1h", "1d", "90" or a number of seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError('a duration such as "30s", "10m", "1h" or "1d", or a number of seconds')
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _ttl_bounds(schema: dict[str, Any]) -> None:
    """The document states the default upper bound; a node's own is tokens.max_ttl_seconds (TokenService
    checks it, naming the field)."""
    for option in schema.get("anyOf", []):
        if option.get("type") == "integer":
            option["maximum"] = TokenConfig.model_fields["max_ttl_seconds"].default


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    container: str | None = Field(default=None, min_length=1, max_length=64)
    """Scope the token to one container (its routes and its console socket)."""
    purpose: Purpose = Field(default="all", description="What the token may open: all, the REST API only, "
                                                        "the console WebSocket only, SFTP only (`sftp`: only "
                                                        "with `container`; an `all` token does not open SFTP), "
                                                        "or receiving one server transfer from another node "
                                                        "(`transfer`: without `container`, not single-use).")
    ttl_seconds: int | None = Field(
        default=None, strict=True, ge=1, json_schema_extra=_ttl_bounds,
        description="Seconds the token lives: 1 to tokens.max_ttl_seconds (86400 unless configured); default "
                    "tokens.default_ttl_seconds (600 unless configured).")
    ttl: int | str | None = Field(default=None, description='Upstream Lightd\'s form of ttl_seconds (give one of '
                                  'them): "30s", "10m", "1h", "1d", or a number of seconds; the same bounds.')
    remove_on_use: bool = Field(default=False, strict=True)
    """Single use: the token is deleted at its first successful use (a request or a console socket)."""

    @field_validator("ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int | None:
        return None if value is None else duration_seconds(value)

    @model_validator(mode="after")
    def _one_ttl(self) -> TokenRequest:
        if self.ttl is not None and self.ttl_seconds is not None:
            raise ValueError("give ttl or ttl_seconds, not both")
        return self

    @property
    def seconds(self) -> int | None:
        return self.ttl_seconds if self.ttl is None else int(self.ttl)


class TokenView(View):
    """A temporary token as listed: never its value or its hash."""

    id: str
    purpose: Purpose
    container: str | None
    created_at: datetime
    expires_at: datetime
    remove_on_use: bool


class TokenCreated(View):
    token: str
    """The token itself: this is the only answer that shows it."""
    id: str
    """Its public id (to list and revoke it)."""
    expires_at: datetime
    purpose: Purpose
    container: str | None
    remove_on_use: bool


class TokenList(View):
    tokens: list[TokenView]
    count: int


class TokenRevoked(View):
    revoked: TokenView
    sockets_closed: int
    """Console sockets opened with the token, closed with 4401."""


def _node_only(request: web.Request, what: str) -> None:
    if not request[keys.PRINCIPAL].node:
        raise Forbidden(f"only the node token can {what} temporary tokens")


def token_view(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a temporary token: never its value or its hash."""
    return {"id": row["id"], "purpose": row["purpose"], "container": row["container"],
            "created_at": rfc3339(row["created_at"]), "expires_at": rfc3339(row["expires_at"]),
            "remove_on_use": bool(row.get("remove_on_use"))}


@routes.post("/auth/tokens")
@documented(body=TokenRequest, status=201, response=TokenCreated)
async def create_token(request: web.Request) -> web.Response:
    """Mint a temporary token (the only answer that shows its value)."""
    _node_only(request, "mint")
    body = await read_model(request, TokenRequest, allow_empty=True)
    if body.container is not None:
        request.config_dict[keys.SERVERS].get(body.container)  # NotFound for an unknown container
    issued = await request.config_dict[keys.TOKENS].issue(
        container=body.container, purpose=body.purpose, ttl_seconds=body.seconds, remove_on_use=body.remove_on_use,
        ttl_field="ttl" if body.ttl is not None else "ttl_seconds",
    )
    return json_response(
        {"token": issued.token, "id": issued.id, "expires_at": rfc3339(issued.expires_at), "purpose": body.purpose,
         "container": body.container, "remove_on_use": body.remove_on_use},
        status=201,
    )


@routes.get("/auth/tokens")
@documented(response=TokenList)
async def list_tokens(request: web.Request) -> web.Response:
    """The temporary tokens not yet expired, by id (never their values or hashes)."""
    _node_only(request, "list")
    tokens = [token_view(row) for row in await request.config_dict[keys.TOKENS].live()]
    return json_response({"tokens": tokens, "count": len(tokens)})


@routes.delete("/auth/tokens/{token_id}")
@documented(response=TokenRevoked)
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a temporary token: 401 from its next use on, and console sockets opened with it are closed."""
    _node_only(request, "revoke")
    token_id = request.match_info["token_id"]
    revoked = await request.config_dict[keys.TOKENS].revoke(token_id)
    closed = request.config_dict[keys.CONSOLE_SOCKETS].close_token(token_id)
    return json_response({"revoked": token_view(revoked), "sockets_closed": closed})
