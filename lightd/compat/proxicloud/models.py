"""The create request (seed fields and defaults, plus the real ProxiCloud backend's names as aliases) and
the query parameters ProxiCloud's routes take."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from lightd.errors import ValidationFailed
from lightd.http import ascii_int
from lightd.servers.models import INTERNAL_ID

StrictInt = Annotated[int, Field(strict=True)]
StrictBool = Annotated[bool, Field(strict=True)]
_BOOL = TypeAdapter(bool)


class Network(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)
    bridge: str = Field(default="vmbr0", max_length=64)
    ip: str = Field(default="dhcp", max_length=64)
    ip6: str = Field(default="dhcp", max_length=64)


class Features(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)
    nesting: StrictBool = False
    keyctl: StrictBool = False


class CreateRequest(BaseModel):
    """`POST /api/containers`. Unknown fields are ignored, as a JSON client of the real API expects."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    hostname: str | None = Field(default=None, max_length=63)
    template: str = Field(min_length=1, max_length=255, validation_alias=AliasChoices("template", "ostemplate"))
    cores: StrictInt = Field(default=2, ge=1, le=1024)
    memory: StrictInt = Field(default=1024, ge=16, le=16 * 1024 * 1024)
    """MB."""
    swap: StrictInt = Field(default=512, ge=0, le=16 * 1024 * 1024)
    rootfs: StrictInt = Field(default=9, ge=1, le=1024 * 1024, validation_alias=AliasChoices("rootfs", "disk"))
    """GB."""
    storage: str = Field(default="local-lvm", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    network: Network = Field(default_factory=Network)
    password: str | None = Field(default=None, max_length=256)
    ssh_keys: list[str] = Field(default_factory=list, max_length=64)
    start: StrictBool = False
    onboot: StrictBool = Field(default=True, validation_alias=AliasChoices("onboot", "start_on_boot"))
    unprivileged: StrictBool = True
    features: Features = Field(default_factory=Features)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not INTERNAL_ID.match(value):
            raise ValueError("1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
        return value

    @field_validator("ssh_keys", mode="before")
    @classmethod
    def _ssh_keys(cls, value: Any) -> Any:
        # The real backend takes one string of newline-separated keys; the doc an array.
        if isinstance(value, str):
            return [line for line in value.splitlines() if line.strip()]
        return value

    def options(self, template: str) -> dict[str, Any]:
        """What is kept with the vmid (never the password or keys)."""
        return {
            "template": template, "cores": self.cores, "memory": self.memory, "swap": self.swap, "rootfs": self.rootfs,
            "storage": self.storage, "network": self.network.model_dump(), "onboot": self.onboot,
            "unprivileged": self.unprivileged, "features": self.features.model_dump(),
        }


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    """true/false, 1/0, yes/no, on/off; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return _BOOL.validate_python(raw)
    except ValidationError:
        raise ValidationFailed(f"{name}: must be a boolean (true or false), not '{raw}'") from None


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ValidationFailed(f"{name}: must be one of {', '.join(choices)}, not '{raw}'")
    return raw


def path_vmid(request: web.Request) -> int:
    """The `:id` of a route: a non-negative integer, else 400 `invalid vmid`."""
    raw = request.match_info["vmid"]
    vmid = ascii_int(raw)
    if vmid is None or len(raw) > 9:
        raise ValidationFailed(f"invalid vmid '{raw}': must be an integer")
    return vmid
