"""The reverse proxy's persisted shapes (upstreams, routes, its config) and the loopback-only address rule."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lightd.compat.container_codes.models import parse_duration
from lightd.http import ascii_int

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
METHODS = {"ANY", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


def loopback_address(value: str) -> tuple[str, int]:
    """`127.0.0.1:3001` / `[::1]:3001` -> (ip, port); ValueError for anything not loopback."""
    host, sep, port = value.rpartition(":")
    number = ascii_int(port)
    if not sep or number is None or not 0 < number < 65536:
        raise ValueError(f"{value!r}: expected '<loopback ip>:<port>'")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"{value!r}: only IP literals on loopback are allowed (no host names)") from None
    if not ip.is_loopback:
        raise ValueError(f"{value!r}: only loopback addresses (a container's published port) are allowed")
    return str(ip), int(port)


class UpstreamServer(_Model):
    address: str
    weight: int = Field(default=1, ge=1, le=100, strict=True)
    max_fails: int = Field(default=3, ge=0, le=1000, strict=True)
    fail_timeout: str = "30s"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        ip, port = loopback_address(value)
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    @field_validator("fail_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        parse_duration(value)
        return value


class HealthCheck(_Model):
    enabled: bool = False
    path: str = "/health"
    interval: str = "30s"
    timeout: str = "5s"
    healthy_threshold: int = Field(default=2, ge=1, le=100)
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)


class Upstream(_Model):
    name: str
    strategy: Literal["round_robin", "random", "least_conn"] = "round_robin"
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    servers: list[UpstreamServer] = Field(min_length=1, max_length=32)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("1-64 characters: letters, digits, '_', '.', '-'")
        return value


class Route(_Model):
    id: str | None = None
    path: str = Field(min_length=1, max_length=1024)
    method: str = "ANY"
    upstream: str
    middleware: list[str] = Field(default_factory=list, max_length=16)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout: str = "30s"
    retries: int = Field(default=0, ge=0, le=5, strict=True)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError("1-64 characters: letters, digits, '_', '.', '-'")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "*" in value[:-1] or "\x00" in value:
            raise ValueError("must start with '/' and may only end with '*'")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"must be one of {', '.join(sorted(METHODS))}")
        return value.upper()

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.match(r"^[A-Za-z0-9-]{1,64}$", name) or any(c in text for c in "\r\n\x00"):
                raise ValueError(f"bad header {name!r}")
        return value

    @model_validator(mode="after")
    def _timeout(self) -> Route:
        parse_duration(self.timeout)
        return self

    def matches(self, method: str, path: str) -> bool:
        if self.method != "ANY" and self.method != method:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def specificity(self) -> tuple[int, int]:
        return (0 if self.path.endswith("*") else 1, len(self.path))


class ProxyConfig(_Model):
    enabled: bool = True
    default_timeout: str = "30s"
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0, le=1024**3, strict=True)

    @field_validator("default_timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        parse_duration(value)
        return value
