"""Request shapes of the Container Codes API (seed `container-codes-api.md`) and the unit parsers they need:
Docker-style sizes ("512m", "1g"), durations ("30s", "5m"), cores ("0.5")."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from lightd.servers.models import INTERNAL_ID
from lightd.timestamps import rfc3339

# The real project's `security.rs`: alphanumerics, '-' and '_', no leading or trailing '-', at most 63.
NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*$", re.IGNORECASE)
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
PRIORITIES = {"low": 0, "normal": 1, "high": 2, "critical": 3}
RESTART_POLICIES = {"no": False, "": False, "always": True, "unless-stopped": True, "on-failure": True}
MAX_COMMAND_ARGS = 256


def parse_size(value: Any) -> int:
    """"512m" / "1g" / 1048576 -> bytes (Docker's binary units)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as '512m' or a number of bytes")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = SIZE.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError("must be a size such as '512m', '1g' or a number of bytes")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError("must be larger than 0")
    return size


def parse_duration(value: Any) -> float:
    """"30s" / "5m" / "1h" / 30 -> seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '30s'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError("must be a duration such as '30s', '5m' or '1h'")
        seconds = float(match.group(1)) * DURATION_UNITS[(match.group(2) or "s").lower()]
    if not 0 < seconds <= 7 * 86_400:
        raise ValueError("must be between 0 and 7 days")
    return seconds


def parse_cores(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number of cores such as '0.5'")
    try:
        cores = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of cores such as '0.5'") from None
    if not 0 < cores <= 1024:
        raise ValueError("must be between 0 and 1024 cores")
    return cores


iso = rfc3339  # Container Codes' times are lightd's format already


def command_line(command: list[str] | str | None) -> str | None:
    """The seed's argv list (or a shell string) as the one startup command lightd runs through `sh -c`."""
    if command is None:
        return None
    if isinstance(command, str):
        return command
    return shlex.join(command)


class _Model(BaseModel):
    # Fields the seed or the real project's types name but lightd has no use for are accepted and ignored
    # (clients send them); a field of a wrong type is a 400 naming it.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Resources(_Model):
    cpu_limit: str | float | None = None
    memory_limit: str | int | None = None
    disk_limit: str | int | None = None  # real project's type; lightd has no disk quota: ignored
    timeout: str | float | None = None

    @field_validator("cpu_limit")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        return None if value is None else parse_cores(value)

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None:
            return None
        size = parse_size(value)
        if size < 6 * 1024 * 1024:
            raise ValueError("must be at least 6m (Docker's minimum)")
        return size

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)


def _check_command(value: list[str] | str | None) -> list[str] | str | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not items or len(items) > MAX_COMMAND_ARGS or any("\x00" in item for item in items):
        raise ValueError(f"must be a non-empty list of at most {MAX_COMMAND_ARGS} strings without NUL")
    if sum(len(item) for item in items) > 8192:
        raise ValueError("is longer than 8192 characters")
    return value


def _check_environment(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not ENV_NAME.match(key) or "\x00" in val:
            raise ValueError(f"bad environment variable {key!r} (letters, digits and '_', not starting with a digit)")
    return value


def _check_image(value: str) -> str:
    if ".." in value or "//" in value:
        raise ValueError("must not contain '..' or '//'")
    return value


Image = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_check_image)]
Command = Annotated[list[str] | str, AfterValidator(_check_command)]
"""The seed's argv list or a shell string."""
Environment = Annotated[dict[str, str], AfterValidator(_check_environment)]


class ContainerCreate(_Model):
    name: str
    image: Image
    command: Command | None = None
    environment: Environment = Field(default_factory=dict, max_length=256)
    ports: dict[str, str | int] = Field(default_factory=dict, max_length=64)
    volumes: dict[str, str] = Field(default_factory=dict, max_length=32)
    resources: Resources = Field(default_factory=Resources)
    network_mode: str | None = None
    restart_policy: str = "no"
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    start: bool = True
    """lightd extension: false creates without starting."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value) or not INTERNAL_ID.match(value):
            raise ValueError("1-63 characters: letters, digits, '-' and '_', not starting or ending with '-'")
        return value

    @field_validator("restart_policy")
    @classmethod
    def _restart(cls, value: str) -> str:
        if value not in RESTART_POLICIES:
            raise ValueError(f"must be one of {', '.join(p for p in RESTART_POLICIES if p)}")
        return value


class InputFile(_Model):
    source: str = Field(min_length=1, max_length=4096)
    """A path in the front end's file area (what /api/files serves)."""
    destination: str = Field(min_length=1, max_length=4096)
    """A path in the job's volume (mounted at the container's home directory)."""


class RetryPolicy(_Model):
    max_attempts: int = Field(default=1, ge=1, le=10, strict=True)
    backoff: Literal["none", "fixed", "linear", "exponential"] = "exponential"
    delay: str | float = "1s"

    @field_validator("delay")
    @classmethod
    def _delay(cls, value: Any) -> float:
        return parse_duration(value)


class JobCreate(_Model):
    name: str
    image: Image
    command: Command
    environment: Environment = Field(default_factory=dict, max_length=256)
    input_files: list[InputFile] = Field(default_factory=list, max_length=64)
    output_patterns: list[str] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    timeout: str | float | None = None
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not 0 < len(value) <= 128 or "\x00" in value:
            raise ValueError("must be 1-128 characters")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("output_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not 0 < len(pattern) <= 1024 or "\x00" in pattern or ".." in pattern.split("/"):
                raise ValueError("patterns are 1-1024 characters without NUL or '..'")
        return value

    def time_limit(self) -> float | None:
        return self.timeout or self.resources.timeout  # type: ignore[return-value]
