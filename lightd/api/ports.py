"""/network/ports: the port pool."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.errors import ValidationFailed
from lightd.http import ascii_int, json_response, read_model
from lightd.ports import PortSpec, normalize_ip

routes = web.RouteTableDef()


class PortFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    ip: str | None = None
    protocol: Literal["tcp", "udp"] | None = None
    in_use: bool | None = None

    @field_validator("ip", mode="before")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else normalize_ip(value)


class ProtocolQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    protocol: Literal["tcp", "udp"] | None = None


class UseBody(BaseModel):
    """Upstream Lightd's body for PUT .../use: `{"in_use": false}` releases the port (as /release does)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    in_use: bool = Field(default=True, strict=True)


class BulkDelete(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    ports: list[PortSpec] = Field(min_length=1, max_length=10_000)


class PortView(View):
    """One pool port: `port_view` (lightd/ports.py)."""

    ip: str
    port: int
    protocol: Literal["tcp", "udp"]
    in_use: bool
    container: str | None
    """The server holding it; null when free or marked in use by hand."""


class PortList(View):
    ports: list[PortView]
    count: int


class PortDeleted(View):
    deleted: PortView


class BulkDeleted(View):
    deleted: list[PortSpec]
    not_found: list[PortSpec]
    in_use: list[PortSpec]
    """Held by a container or marked in use: left in the pool."""


def _address(request: web.Request) -> tuple[str, int]:
    try:
        ip = normalize_ip(request.match_info["ip"])
    except ValueError:
        raise ValidationFailed("ip: must be an IPv4 or IPv6 address", details={"field": "ip"}) from None
    port = ascii_int(request.match_info["port"])
    if port is None or not 1 <= port <= 65535:
        raise ValidationFailed("port: must be an integer from 1 to 65535", details={"field": "port"})
    return ip, port


@routes.post("/network/ports")
@documented(body=PortSpec, status=201, response=PortView)
async def add_port(request: web.Request) -> web.Response:
    spec = await read_model(request, PortSpec)
    return json_response(await request.config_dict[keys.PORTS].add(spec), status=201)


@routes.get("/network/ports")
@documented(query=PortFilter, response=PortList)
async def list_ports(request: web.Request) -> web.Response:
    f = read_query(request, PortFilter)
    ports = await request.config_dict[keys.PORTS].list(ip=f.ip, protocol=f.protocol, in_use=f.in_use)
    return json_response({"ports": ports, "count": len(ports)})


@routes.get("/network/ports/random")
@documented(query=PortFilter, response=PortView)
async def random_port(request: web.Request) -> web.Response:
    f = read_query(request, PortFilter)
    return json_response(await request.config_dict[keys.PORTS].random_available(ip=f.ip, protocol=f.protocol))


@routes.post("/network/ports/bulk-delete")
@documented(body=BulkDelete, response=BulkDeleted)
async def bulk_delete(request: web.Request) -> web.Response:
    body = await read_model(request, BulkDelete)
    return json_response(await request.config_dict[keys.PORTS].bulk_delete(body.ports))


@routes.get("/network/ports/{ip}/{port}")
@documented(query=ProtocolQuery, response=PortView)
async def get_port(request: web.Request) -> web.Response:
    ip, port = _address(request)
    q = read_query(request, ProtocolQuery)
    return json_response(await request.config_dict[keys.PORTS].get(ip, port, q.protocol))


@routes.put("/network/ports/{ip}/{port}/use")
@documented(query=ProtocolQuery, body=UseBody, response=PortView)
async def use_port(request: web.Request) -> web.Response:
    """Mark a port in use by hand (no body, or `{"in_use": true}`); `{"in_use": false}` releases it."""
    ip, port = _address(request)
    q = read_query(request, ProtocolQuery)
    body = await read_model(request, UseBody, allow_empty=True)
    return json_response(await request.config_dict[keys.PORTS].set_in_use(ip, port, q.protocol, body.in_use))


@routes.put("/network/ports/{ip}/{port}/release")
@routes.delete("/network/ports/{ip}/{port}/use")
@documented(query=ProtocolQuery, response=PortView)
async def release_port(request: web.Request) -> web.Response:
    ip, port = _address(request)
    q = read_query(request, ProtocolQuery)
    return json_response(await request.config_dict[keys.PORTS].set_in_use(ip, port, q.protocol, False))


@routes.delete("/network/ports/{ip}/{port}")
@documented(query=ProtocolQuery, response=PortDeleted)
async def delete_port(request: web.Request) -> web.Response:
    ip, port = _address(request)
    q = read_query(request, ProtocolQuery)
    deleted = await request.config_dict[keys.PORTS].delete(ip, port, q.protocol)
    return json_response({"deleted": deleted})
