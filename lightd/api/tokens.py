"""/auth/tokens: temporary tokens — minted, listed and revoked by the node token only."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lightd import keys
from lightd.api.openapi import documented
from lightd.api.responses import json_response, read_model
from lightd.errors import Forbidden

routes = web.RouteTableDef()


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    container: str | None = Field(default=None, min_length=1, max_length=64)
    """Scope the token to one container (its routes and its console socket)."""
    purpose: str = "all"
    """all | api | websocket"""
    ttl_seconds: int | None = Field(default=None, strict=True)


def _node_only(request: web.Request, what: str) -> None:
    if not request[keys.PRINCIPAL].node:
        raise Forbidden(f"only the node token can {what} temporary tokens")


def token_view(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a temporary token: never its value or its hash."""
    return {"id": row["id"], "purpose": row["purpose"], "container": row["container"],
            "created_at": row["created_at"], "expires_at": row["expires_at"]}


@routes.post("/auth/tokens")
@documented(body=TokenRequest, status=201)
async def create_token(request: web.Request) -> web.Response:
    """Mint a temporary token (the only answer that shows its value)."""
    _node_only(request, "mint")
    body = await read_model(request, TokenRequest, allow_empty=True)
    if body.container is not None:
        request.config_dict[keys.SERVERS].get(body.container)  # NotFound for an unknown container
    issued = await request.config_dict[keys.TOKENS].issue(
        container=body.container, purpose=body.purpose, ttl_seconds=body.ttl_seconds
    )
    return json_response(
        {"token": issued.token, "id": issued.id, "expires_at": issued.expires_at, "purpose": body.purpose,
         "container": body.container},
        status=201,
    )


@routes.get("/auth/tokens")
@documented()
async def list_tokens(request: web.Request) -> web.Response:
    """The temporary tokens not yet expired, by id (never their values or hashes)."""
    _node_only(request, "list")
    tokens = [token_view(row) for row in await request.config_dict[keys.TOKENS].live()]
    return json_response({"tokens": tokens, "count": len(tokens)})


@routes.delete("/auth/tokens/{token_id}")
@documented()
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a temporary token: 401 from its next use on, and console sockets opened with it are closed."""
    _node_only(request, "revoke")
    token_id = request.match_info["token_id"]
    revoked = await request.config_dict[keys.TOKENS].revoke(token_id)
    closed = request.config_dict[keys.CONSOLE_SOCKETS].close_token(token_id)
    return json_response({"revoked": token_view(revoked), "sockets_closed": closed})
