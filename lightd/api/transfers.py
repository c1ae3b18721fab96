"""Moving a server between nodes. On the source (node token): `/containers/{id}/transfer` starts, shows
and cancels it. On the target (a temporary token of purpose `transfer`, checked here: these routes are
self-authenticated): `/transfers` takes the offer, the stream and a cancel (lightd/transfers/protocol.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightd import keys
from lightd.api.containers import ContainerView
from lightd.api.public import self_authenticated
from lightd.api.query import accepts_query
from lightd.api.route_docs import View, documented
from lightd.errors import Forbidden, Unauthorized
from lightd.http import bearer_token, json_response, own_body_limit, read_model, validation_error
from lightd.servers.models import ContainerSpec
from lightd.transfers.protocol import Offer

routes = web.RouteTableDef()
PATH = "/containers/{container_id}/transfer"


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    target_url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=2048)
    """The target node's API base, e.g. `http://10.0.0.2:8070`."""
    target_token: str = Field(min_length=20, max_length=512)
    """A temporary token minted on the target with purpose `transfer` (never a node token)."""


class TransferView(View):
    """A server's transfer from this node: running now, or its last one."""

    transfer_id: str
    """The same id on both nodes: `DELETE /transfers/{transfer_id}` on the target cancels it too."""
    container_id: str
    target_url: str
    status: Literal["running", "completed", "failed", "cancelled"]
    phase: Literal["stopping", "sending", "committing"] | None
    """While running: stopping the server, sending its volume, or waiting for the target to create it."""
    percent: int | None
    bytes_sent: int | None
    """Compressed bytes sent (once ended: of a completed transfer)."""
    sha256: str | None
    error: str | None
    """Why it failed (the server is here as it was), or a note on a completed one."""
    created_at: datetime
    ended_at: datetime | None


class IncomingView(View):
    transfer_id: str
    container_id: str
    status: Literal["prepared", "receiving", "committing", "cancelled"]
    peer: str
    """The address the offer came from."""


class IncomingList(View):
    transfers: list[IncomingView]
    count: int


class Received(View):
    transfer_id: str
    container: ContainerView
    """The server as created here: `ready`, not started."""
    bytes: int
    sha256: str


# -- on the source -------------------------------------------------------------------------------------
@routes.post(PATH)
@documented(body=TransferRequest, status=202, response=TransferView,
            summary="Move the server to another node (202: stopping it; transfer_* events follow)")
async def start_transfer(request: web.Request) -> web.Response:
    # SECURITY: a container-scoped token must not send the server's files to a node of its choosing.
    if not request[keys.PRINCIPAL].node:
        raise Forbidden("only the node token can transfer a server")
    body = await read_model(request, TransferRequest)
    view = await request.config_dict[keys.TRANSFERS].source.start(
        request.match_info["container_id"], body.target_url, body.target_token)
    return json_response(view, status=202)


@routes.get(PATH)
@documented(response=TransferView)
async def get_transfer(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.TRANSFERS].source.view(request.match_info["container_id"]))


@routes.delete(PATH)
@documented(response=TransferView, summary="Cancel the running transfer (the server stays here as it was)")
async def cancel_transfer(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.TRANSFERS].source.cancel(request.match_info["container_id"]))


# -- on the target -------------------------------------------------------------------------------------
async def _transfer_token(request: web.Request) -> None:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing or malformed Authorization header (expected: Bearer lightd_<token>)")
    await request.config_dict[keys.TOKENS].authenticate(token, purpose="transfer", container=None)


def _stream_limit(request: web.Request) -> int:
    return request.app[keys.CONFIG].transfers.max_bytes * 2  # the frames add 5 bytes per MiB


@routes.post("/transfers")
@self_authenticated
@accepts_query(None)
@documented(body=Offer, status=201, response=IncomingView, description=(
    "The target's side, with a token of purpose `transfer`: a source offers a server (its spec, install log "
    "and volume size). 409 `port_in_use` with `details.ports` (each with its `reason`) when this node cannot "
    "give the ports; `already_exists` for the id or volume; nothing is created."))
async def offer_transfer(request: web.Request) -> web.Response:
    await _transfer_token(request)
    offer = await read_model(request, Offer)
    try:
        spec = ContainerSpec.model_validate(offer.spec)
    except ValidationError as exc:
        raise validation_error(exc, "spec") from None
    peer = request.remote or ""
    return json_response(await request.config_dict[keys.TRANSFERS].target.prepare(offer, spec, peer), status=201)


@routes.put("/transfers/{transfer_id}")
@self_authenticated
@accepts_query(None)
@own_body_limit(_stream_limit)
@documented(status=201, response=Received, description=(
    "The target's side, with a token of purpose `transfer`: the offered server's volume as the framed tar + "
    "zstd stream of lightd/transfers/protocol.py. Answers when the server exists here (ready, not started); "
    "400 `archive_rejected` for a checksum mismatch or a refused entry, and then nothing is created."))
async def receive_transfer(request: web.Request) -> web.Response:
    await _transfer_token(request)
    result = await request.config_dict[keys.TRANSFERS].target.receive(request.match_info["transfer_id"], request.content)
    return json_response(result, status=201)


@routes.delete("/transfers/{transfer_id}")
@self_authenticated
@accepts_query(None)
@documented(response=IncomingView, summary="Cancel a transfer being received (token of purpose transfer, or the node token)")
async def cancel_incoming(request: web.Request) -> web.Response:
    await _transfer_token(request)
    return json_response(await request.config_dict[keys.TRANSFERS].target.cancel(request.match_info["transfer_id"]))


@routes.get("/transfers")
@documented(response=IncomingList, summary="Transfers this node is receiving")
async def list_incoming(request: web.Request) -> web.Response:
    transfers = request.config_dict[keys.TRANSFERS].target.list()
    return json_response({"transfers": transfers, "count": len(transfers)})
