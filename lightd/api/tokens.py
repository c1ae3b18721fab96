"""POST /auth/tokens: temporary tokens."""

from __future__ import annotations

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


@routes.post("/auth/tokens")
@documented(body=TokenRequest, status=201)
async def create_token(request: web.Request) -> web.Response:
    if not request[keys.PRINCIPAL].node:
        raise Forbidden("only the node token can mint temporary tokens")
    body = await read_model(request, TokenRequest, allow_empty=True)
    if body.container is not None:
        request.config_dict[keys.SERVERS].get(body.container)  # NotFound for an unknown container
    token, expires_at = await request.config_dict[keys.TOKENS].issue(
        container=body.container, purpose=body.purpose, ttl_seconds=body.ttl_seconds
    )
    return json_response(
        {"token": token, "expires_at": expires_at, "purpose": body.purpose, "container": body.container}, status=201
    )
