"""Request bodies of the ProxiCloud web app's API, field for field as its frontend (`frontend/lib/types.ts`)
sends them; unknown fields are ignored as the real Go backend's decoder does."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightd.compat.proxicloud.models import CreateRequest, Network
from lightd.errors import ValidationFailed
from lightd.http import ascii_int
from lightd.servers.models import INTERNAL_ID

StrictInt = Annotated[int, Field(strict=True)]
StrictBool = Annotated[bool, Field(strict=True)]
LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""A Proxmox storage, volume or node name as this API accepts it."""
MOUNTPOINT = re.compile(r"^mp[0-9]$")


def _optional(value: Any) -> Any:
    return None if value == "" else value  # the frontend sends "" for "not set"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class AppCreateRequest(_Body):
    """`POST /api/containers` (`CreateContainerRequest`)."""

    vmid: StrictInt | None = Field(default=None, ge=100, le=999_999_999)
    hostname: str = Field(max_length=63)
    cores: StrictInt = Field(default=1, ge=1, le=1024)
    memory: StrictInt = Field(default=512, ge=16, le=16 * 1024 * 1024)
    """MB."""
    disk: StrictInt = Field(default=8, ge=1, le=1024 * 1024)
    """GB."""
    ostemplate: str = Field(min_length=1, max_length=255)
    password: str | None = Field(default=None, max_length=256)
    ssh_keys: str | None = Field(default=None, max_length=64 * 1024)
    start_on_boot: StrictBool = False
    unprivileged: StrictBool = False
    project_id: str | None = Field(default=None, max_length=64)
    ip_address: str | None = Field(default=None, max_length=64)
    gateway: str | None = Field(default=None, max_length=64)
    nameserver: str | None = Field(default=None, max_length=64)

    _blank = field_validator("password", "ssh_keys", "project_id", "ip_address", "gateway", "nameserver",
                             mode="before")(_optional)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not INTERNAL_ID.match(value):
            raise ValueError("1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
        return value

    @field_validator("ip_address")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_interface(value)
            except ValueError:
                raise ValueError("an address with its prefix length, e.g. 192.168.1.100/24") from None
            if "/" not in value:
                raise ValueError("an address with its prefix length, e.g. 192.168.1.100/24")
        return value

    @field_validator("gateway", "nameserver")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("an IP address, e.g. 192.168.1.1") from None
        return value

    def options(self, template: str) -> dict[str, Any]:
        """What is kept with the vmid: the doc flavour's options of the same container, plus the network
        fields only this API has (never the password or keys)."""
        doc = CreateRequest(template=template, cores=self.cores, memory=self.memory, rootfs=self.disk,
                            onboot=self.start_on_boot, unprivileged=self.unprivileged,
                            network=Network(ip=self.ip_address or "dhcp"))
        options = doc.options(template)
        options["network"].update({k: v for k, v in (("gw", self.gateway), ("nameserver", self.nameserver)) if v})
        return options


class VolumeCreateRequest(_Body):
    """`POST /api/volumes` (`CreateVolumeRequest`)."""

    name: str = Field(pattern=LABEL)
    size: StrictInt = Field(ge=1, le=1024 * 1024)
    """GB."""
    storage: str = Field(default="local-lvm", pattern=LABEL)
    type: str = Field(default="ssd", pattern=r"^[a-z]{1,16}$")
    node: str | None = Field(default=None, max_length=63)

    @field_validator("storage", "type", "node", mode="before")
    @classmethod
    def _defaults(cls, value: Any, info: Any) -> Any:
        if value in (None, ""):
            return {"storage": "local-lvm", "type": "ssd"}.get(info.field_name)
        return value


class AttachRequest(_Body):
    """`POST /api/volumes/{volid}/attach/{vmid}` (`AttachVolumeRequest`; the path's vmid wins)."""

    mountpoint: str | None = None

    @field_validator("mountpoint", mode="before")
    @classmethod
    def _mountpoint(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        if not isinstance(value, str) or not MOUNTPOINT.match(value):
            raise ValueError("one of mp0 to mp9")
        return value


class DetachRequest(_Body):
    """`POST /api/volumes/{volid}/detach/{vmid}` (`DetachVolumeRequest`)."""

    force: StrictBool = False


class SnapshotRequest(_Body):
    """`POST /api/volumes/{volid}/snapshots` (`CreateSnapshotRequest`); names as Proxmox allows them."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{1,39}$")
    description: str | None = Field(default=None, max_length=1024)


class RestoreRequest(_Body):
    snapshot_name: str = Field(min_length=1, max_length=40)


class CloneRequest(_Body):
    snapshot_name: str = Field(min_length=1, max_length=40)
    new_name: str = Field(pattern=LABEL)
    storage: str | None = Field(default=None, pattern=LABEL)

    _blank = field_validator("storage", mode="before")(_optional)


class ProjectNetwork(_Body):
    subnet: str | None = Field(default=None, max_length=64)
    gateway: str | None = Field(default=None, max_length=64)
    nameserver: str | None = Field(default=None, max_length=64)
    vlan_tag: StrictInt | None = Field(default=None, ge=0, le=4094)

    _blank = field_validator("subnet", "gateway", "nameserver", mode="before")(_optional)

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError:
                raise ValueError("invalid subnet CIDR format (must be network address like 10.0.1.0/24)") from None
        return value

    @field_validator("gateway", "nameserver")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return AppCreateRequest._address(value)


class ProjectRequest(_Body):
    """`POST /api/projects` and `PUT /api/projects/{id}` (every field optional on the update)."""

    name: str | None = Field(default=None, min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=4096)
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=64)
    network: ProjectNetwork | None = None
    container_id_start: StrictInt | None = Field(default=None, ge=100, le=999_999_999)
    container_id_end: StrictInt | None = Field(default=None, ge=100, le=999_999_999)

    _blank = field_validator("name", mode="before")(_optional)


class AssignRequest(_Body):
    project_id: str = Field(max_length=64)
    """Empty: no project."""


def path_vmid(request: web.Request) -> int:
    """The `{vmid}` of a route, else 400 `invalid vmid` (the real backend's words)."""
    raw = request.match_info["vmid"]
    vmid = ascii_int(raw)
    if vmid is None or len(raw) > 9:
        raise ValidationFailed("invalid vmid")
    return vmid
