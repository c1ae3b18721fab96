"""/containers: servers (listed, edited in place) and their power, install and network actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.http import json_response, read_json, read_model
from lightd.ports import PortSpec
from lightd.servers.listing import PageRequest, container_page
from lightd.templates.service import patch_changes
from lightd.servers.models import (MAX_VOLUME_MOUNTS, CommandRequest, ContainerSpec, InstallState, Limits, Mount,
                                   RebindRequest, ReinstallRequest, RuntimeState, StopConfig, VolumeMount)

routes = web.RouteTableDef()
PATH = "/containers/{container_id}"


class StopQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float | None = Field(default=None, gt=0, le=3600)


class ContainerListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: RuntimeState | None = None
    install_state: InstallState | None = None
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Servers per page (default: all of them, in one answer)."""
    cursor: str | None = Field(default=None, min_length=1, max_length=256)
    """`next_cursor` of the previous page."""


class ContainerPatch(BaseModel):
    """What PATCH changes; a field left out keeps its value. `limits` merges limit by limit (a null limit
    goes back to docker.default_limits); every other field is replaced whole. The merged spec is validated
    as a create is."""

    model_config = ConfigDict(extra="forbid")
    limits: Limits | None = None
    environment: dict[str, str] | None = Field(default=None, max_length=256)
    startup_command: str | None = Field(default=None, min_length=1, max_length=16_384)
    start_pattern: str | None = Field(default=None, max_length=1024)
    """null or "": no pattern (running as soon as the process runs)."""
    stop: StopConfig | None = None
    image: str | None = Field(default=None, max_length=255)
    variables: dict[str, str | int | float | bool | None] | None = Field(default=None, max_length=256)
    """A server made from a template: new values of its variables (the others keep theirs), checked against
    the template's rules; its environment follows at the next start."""
    volume_mounts: list[VolumeMount] | None = Field(default=None, max_length=MAX_VOLUME_MOUNTS)
    """The whole list of other lightd volumes bound into the server's container (`[]`: none), each
    `{volume_id, target, read_only}`: targets absolute, overlapping neither /home/container nor a `mount`
    nor each other; the volumes must exist. The container is recreated with them at the next start
    (`on_next_start`); a mounted volume cannot be deleted (409 volume_in_use)."""

    @field_validator("environment", "startup_command", "stop", "image", "variables", "volume_mounts")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null (leave it out to keep the current value)")
        return value


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: int = Field(default=150, ge=1, le=10_000)


class TemplateUse(View):
    id: str
    image_label: str | None
    variables: dict[str, str]
    """Every variable's value (env name -> value)."""


class ContainerView(View):
    """One server as every answer shows it: `container_view` (lightd/servers/models.py), field for field."""

    internal_id: str
    name: str
    """The Docker container's name (`docker.container_prefix` + internal_id)."""
    container_id: str
    """Upstream Lightd's field: the Docker name again, which stays when lightd recreates the container."""
    image: str
    volume_id: str
    startup_command: str
    start_pattern: str | None
    ports: list[PortSpec]
    limits: Limits
    mount: list[Mount]
    volume_mounts: list[VolumeMount]
    """Other lightd volumes bound into the container (PATCH `volume_mounts`; from the next start)."""
    stop: StopConfig | None
    restart_on_crash: bool
    description: str
    template: TemplateUse | None
    """The template the server was made from (null: made from raw fields)."""
    install_state: InstallState
    install_error: str | None
    state: RuntimeState
    exit_code: int | None
    oom_killed: bool
    container_missing: bool
    created_at: datetime
    updated_at: datetime


class ContainerCreated(ContainerView):
    message: str


class ContainerList(View):
    containers: list[ContainerView]
    count: int
    """Servers on this page."""
    total: int
    """Servers matching the filters, on every page."""
    next_cursor: str | None
    """`cursor` of the next page; null on the last one."""


class ContainerPatched(View):
    container: ContainerView
    applied: list[str]
    """What is in force now (limits through `docker update`, disk, start pattern, stop)."""
    on_next_start: list[str]
    """What the next start brings in."""
    warnings: list[str]


class Accepted(View):
    """A power, install, network or command action accepted (it runs on in the background), or a delete done."""

    message: str
    internal_id: str


class ConsoleLines(View):
    internal_id: str
    lines: list[str]


def _id(request: web.Request) -> str:
    return request.match_info["container_id"]


def accepted(message: str, internal_id: str) -> web.Response:
    return json_response({"message": message, "internal_id": internal_id}, status=202)


@routes.post("/containers")
@documented(body=ContainerSpec, status=202, response=ContainerCreated, description=(
    "Either every field of the spec, or `template` (a template's id), `variables` ({ENV: value}, checked "
    "against the template's rules) and `image_label`, with the spec's other fields (internal_id, volume_id, "
    "ports, limits...) but those the template sets (image, startup_command, start_pattern, stop, install_*)."))
async def create_container(request: web.Request) -> web.Response:
    body = await read_json(request)
    if isinstance(body, dict) and "template" in body:
        spec = request.config_dict[keys.TEMPLATES].spec_for_create(body)
    else:
        spec = await read_model(request, ContainerSpec)
    view = await request.config_dict[keys.SERVERS].create(spec)
    return json_response({"message": f"container {spec.internal_id} is installing", **view}, status=202)


@routes.get("/containers")
@documented(query=ContainerListQuery, response=ContainerList)
async def list_containers(request: web.Request) -> web.Response:
    """Servers, oldest first (then by id); filtered by state, paged with limit and next_cursor."""
    manager = request.config_dict[keys.SERVERS]
    if not request.query:
        # The whole list, from an encoding cached until a server changes (the hot path of a polling panel),
        # with its ETag and gzip encoding made once per change too.
        return await request.config_dict[keys.CONTAINER_LISTING].response(request, await manager.listing_json())
    q = read_query(request, ContainerListQuery)
    return json_response(container_page(manager, state=q.state, install_state=q.install_state,
                                        page=PageRequest(q.limit, q.cursor)))


@routes.patch(PATH)
@documented(body=ContainerPatch, response=ContainerPatched)
async def patch_container(request: web.Request) -> web.Response:
    """Change a server without reinstalling it: `applied` lists what is in force now (limits through
    `docker update`, disk, start pattern, stop), `on_next_start` what its next start brings in."""
    body = await read_model(request, ContainerPatch)
    changes = body.model_dump(mode="json", exclude_unset=True)
    manager = request.config_dict[keys.SERVERS]
    changes = patch_changes(manager.get(_id(request)).spec, changes)  # variables -> environment, rules checked
    return json_response(await manager.patch(_id(request), changes))


@routes.get(PATH)
@documented(response=ContainerView)
async def get_container(request: web.Request) -> web.Response:
    return json_response(await request.config_dict[keys.SERVERS].view(_id(request)))


@routes.delete(PATH)
@documented(response=Accepted)
async def delete_container(request: web.Request) -> web.Response:
    await request.config_dict[keys.SERVERS].delete(_id(request))
    return json_response({"message": f"container {_id(request)} deleted", "internal_id": _id(request)})


async def _power(request: web.Request, action: str) -> web.Response:
    timeout = read_query(request, StopQuery).timeout if action in ("stop", "restart") else None
    message = await request.config_dict[keys.SERVERS].power(_id(request), action, timeout)
    return accepted(message, _id(request))


@routes.post(PATH + "/start")
@documented(status=202, response=Accepted)
async def start(request: web.Request) -> web.Response:
    return await _power(request, "start")


@routes.post(PATH + "/stop")
@documented(query=StopQuery, status=202, response=Accepted)
async def stop(request: web.Request) -> web.Response:
    return await _power(request, "stop")


@routes.post(PATH + "/restart")
@documented(query=StopQuery, status=202, response=Accepted)
async def restart(request: web.Request) -> web.Response:
    return await _power(request, "restart")


@routes.post(PATH + "/kill")
@documented(status=202, response=Accepted)
async def kill(request: web.Request) -> web.Response:
    return await _power(request, "kill")


@routes.post(PATH + "/pause")
@documented(status=202, response=Accepted, description=(
    "The engine freezes every process of the server (`docker pause`); the state becomes `paused` and the console "
    "stays attached. 409 unless the server is starting or running. A stop, restart or kill of a paused server "
    "works: a stop thaws it first, so that it handles its stop command or signal."))
async def pause(request: web.Request) -> web.Response:
    """Pause the server: its processes frozen, its state `paused`."""
    return await _power(request, "pause")


@routes.post(PATH + "/unpause")
@documented(status=202, response=Accepted, description=(
    "The server's processes run again (`docker unpause`); the state goes back to what the pause interrupted "
    "(`running`, or `starting` before its start pattern matched). 409 unless the server is paused."))
async def unpause(request: web.Request) -> web.Response:
    """Unpause the server: back to `running` (or `starting`)."""
    return await _power(request, "unpause")


@routes.post(PATH + "/reinstall")
@documented(body=ReinstallRequest, status=202, response=Accepted)
async def reinstall(request: web.Request) -> web.Response:
    body = await read_model(request, ReinstallRequest, allow_empty=True)
    return accepted(await request.config_dict[keys.SERVERS].reinstall(_id(request), body), _id(request))


@routes.post(PATH + "/rebind-network")
@documented(body=RebindRequest, status=202, response=Accepted)
async def rebind_network(request: web.Request) -> web.Response:
    body = await read_model(request, RebindRequest)
    return accepted(await request.config_dict[keys.SERVERS].rebind(_id(request), body), _id(request))


@routes.get(PATH + "/logs")
@documented(query=LogsQuery, response=ConsoleLines)
async def logs(request: web.Request) -> web.Response:
    q = read_query(request, LogsQuery)
    lines = request.config_dict[keys.SERVERS].logs(_id(request), q.lines)
    return json_response({"internal_id": _id(request), "lines": lines})


@routes.post(PATH + "/commands")
@documented(body=CommandRequest, status=202, response=Accepted)
async def send_command(request: web.Request) -> web.Response:
    body = await read_model(request, CommandRequest)
    await request.config_dict[keys.SERVERS].send_command(_id(request), body.command)
    return accepted("command sent", _id(request))
