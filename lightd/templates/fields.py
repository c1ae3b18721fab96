"""The parts of a template a server's spec carries with it (so that a server made from a template keeps
working when the template changes or goes): its config-file edits, and its variables with their rules and
values. Imports nothing from `lightd.servers` (whose models import this)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightd.templates.rules import RuleError, parse_rules

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PARSERS = ("properties", "yaml", "yml", "json", "ini", "xml", "file")
# Set by lightd for every server made from a template, as Wings sets them: a variable may not take them.
WINGS_VARIABLES = ("STARTUP", "SERVER_MEMORY", "SERVER_IP", "SERVER_PORT", "P_SERVER_UUID", "TZ")


def volume_relative(value: str) -> str:
    """A path inside the volume (Wings' egg paths may start with '/': the volume's root)."""
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\x00" in value or len(value) > 1024:
        raise ValueError("must be a path inside the server's volume, without '..'")
    return "/".join(parts)


class Replacement(BaseModel):
    """One find/replace of a config file (Wings' `match`, `if_value`, `replace_with`)."""

    model_config = ConfigDict(extra="forbid")
    match: str = Field(min_length=1, max_length=1024)
    if_value: str | None = Field(default=None, max_length=4096)
    replace_with: str | int | float | bool | None = None

    @field_validator("replace_with")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > 65_536:
            raise ValueError("at most 65536 characters")
        return value


class ConfigFile(BaseModel):
    """A file of the volume edited before every start, by one of Wings' parsers."""

    model_config = ConfigDict(extra="forbid")
    file: str
    parser: Literal["properties", "yaml", "yml", "json", "ini", "xml", "file"]
    replace: list[Replacement] = Field(default_factory=list, max_length=256)

    @field_validator("file")
    @classmethod
    def _path(cls, value: str) -> str:
        return volume_relative(value)


class Variable(BaseModel):
    """A template variable: the environment variable it sets, its default, its rules, whether it may change."""

    model_config = ConfigDict(extra="forbid")
    env: str
    name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=4096)
    default: str = Field(default="", max_length=16_384)
    rules: str | list[str] = Field(default="", max_length=4096)
    editable: bool = True
    """False: set at create only (a PATCH of it is refused)."""

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError("not an environment variable name")
        if value in WINGS_VARIABLES:
            raise ValueError(f"{value} is set by lightd")
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: str | list[str]) -> str | list[str]:
        try:
            parse_rules(value)
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return value

    def check(self, value: str) -> str | None:
        """What is wrong with `value` under this variable's rules (None: nothing)."""
        return parse_rules(self.rules).check(value)


class TemplateBinding(BaseModel):
    """What a server remembers of the template it was made from."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    image_label: str | None = Field(default=None, max_length=255)
    variables: dict[str, str] = Field(default_factory=dict, max_length=256)
    definitions: list[Variable] = Field(default_factory=list, max_length=256)
    file_denylist: list[str] = Field(default_factory=list, max_length=1024)


def check_install_mount(value: str, reserved: tuple[str, ...]) -> str:
    """Where the installer sees the volume: an absolute path that is none of `reserved`."""
    if not value.startswith("/") or any(p in ("..", ".") for p in value.split("/")) or len(value) > 255:
        raise ValueError("must be an absolute path without '.' or '..' components")
    if any(c in value for c in ":,") or any(ord(c) < 32 for c in value):
        raise ValueError("must not contain ':', ',' or control characters")
    value = value.rstrip("/") or "/"
    if value == "/" or any(value == r or value.startswith(r + "/") for r in reserved):
        raise ValueError(f"{value} cannot be the install mount")
    return value
