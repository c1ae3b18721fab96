"""A template in lightd's own form (what `install-scripts/<id>.json` holds and `GET /templates/{id}` shows):
images by label, the install script with its image and entrypoint, the startup command with `{{VARIABLE}}`
placeholders, variables, the done pattern, the stop, config-file edits and a file denylist."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lightd.servers.models import SIGNALS, StopConfig, validate_image
from lightd.templates.fields import ConfigFile, Variable
from lightd.templates.rules import parse_rules
from lightd.volumes.denylist import compile_denylist

TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
STARTUP_PLACEHOLDER = re.compile(r"\{\{\s*(?:env\.)?([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Characters that make a done string a regular expression in StartPattern: they are escaped.
_REGEX_SPECIALS = re.compile(r"([\\.+*?()|\[\]{}^$])")


class InstallScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str | None = Field(default=None, max_length=1024 * 1024)
    image: str | None = None
    """The installer's image (an egg's `container`); none: the server's image."""
    entrypoint: str = Field(default="bash", pattern=r"^[A-Za-z0-9_./-]{1,128}$")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else validate_image(value)


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=16_384)
    author: str = Field(default="", max_length=255)
    images: dict[str, str] = Field(min_length=1, max_length=64)
    """Label -> image; a create picks one with `image_label` (default: `default_image`, else the first)."""
    default_image: str | None = None
    startup: str = Field(min_length=1, max_length=16_384)
    install: InstallScript = Field(default_factory=InstallScript)
    variables: list[Variable] = Field(default_factory=list, max_length=256)
    done: list[str] = Field(default_factory=list, max_length=32)
    """Console text that says the server is up: a substring, or a regular expression written `regex:…`."""
    stop: StopConfig = Field(default_factory=StopConfig)
    """A command, `^C` (SIGINT), `^SIGTERM`…, or `{"type", "value"}`."""
    config_files: list[ConfigFile] = Field(default_factory=list, max_length=64)
    file_denylist: list[str] = Field(default_factory=list, max_length=1024)
    source: Literal["shipped", "directory", "api"] = "api"
    warnings: list[str] = Field(default_factory=list, max_length=256)
    """What the import noticed and lightd does not enforce (unknown rules, egg features)."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not TEMPLATE_ID.match(value):
            raise ValueError("1-63 characters: lowercase letters, digits, '_', '.', '-', starting with a letter or digit")
        return value

    @field_validator("images")
    @classmethod
    def _images(cls, value: dict[str, str]) -> dict[str, str]:
        for label, image in value.items():
            if not 0 < len(label) <= 255:
                raise ValueError("a label is 1 to 255 characters")
            try:
                validate_image(image)
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
        return value

    @field_validator("file_denylist")
    @classmethod
    def _file_denylist(cls, value: list[str]) -> list[str]:
        compile_denylist(value)  # at most 1000 patterns of 1024 characters that RE2 compiles: 400 at import
        return value

    @field_validator("done", mode="before")
    @classmethod
    def _done(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("done")
    @classmethod
    def _done_pattern(cls, value: list[str]) -> list[str]:
        pattern = done_pattern(value)
        if pattern is not None:
            from lightd.servers.console import StartPattern  # SECURITY: backtracking pattern refused at import

            StartPattern(pattern)
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        return stop_config(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Template:
        if self.default_image is not None and self.default_image not in self.images:
            raise ValueError(f"default_image: {self.default_image!r} is not a label of images")
        envs = [v.env for v in self.variables]
        if len(envs) != len(set(envs)):
            raise ValueError("variables: the same env is declared twice")
        for i, variable in enumerate(self.variables):
            for name in parse_rules(variable.rules).unknown:
                note = f"variables.{i}.rules: unknown rule {name!r} is not enforced"
                if note not in self.warnings:
                    self.warnings.append(note)
        return self

    def image_for(self, label: str | None) -> tuple[str, str]:
        """(label, image) for `label`, or the default; KeyError for an unknown label."""
        label = label or self.default_image or next(iter(self.images))
        return label, self.images[label]

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "source": self.source,
                "images": self.images, "variables": [v.env for v in self.variables]}


def stop_config(stop: str) -> dict[str, str]:
    """An egg's stop: `^C` is SIGINT, `^X`/`^SIGX` the signal X, anything else a console command."""
    if stop.startswith("^"):
        name = stop[1:].strip().upper()
        name = "SIGINT" if name == "C" else name if name.startswith("SIG") else f"SIG{name}"
        if name in SIGNALS:
            return {"type": "signal", "value": name}
    return {"type": "command", "value": stop}


def done_pattern(done: list[str]) -> str | None:
    """One start pattern for lightd's StartPattern from a done list: substrings stay substrings (escaped when
    they hold regex characters), `regex:` entries stay expressions, several are alternatives."""
    pieces = [d[len("regex:"):] if d.startswith("regex:") else _REGEX_SPECIALS.sub(r"\\\1", d) for d in done if d]
    if not pieces:
        return None
    if len(pieces) == 1:
        return pieces[0]
    return "|".join(f"(?:{p})" for p in pieces)


def startup_command(startup: str) -> str:
    """`{{NAME}}` (and `{{env.NAME}}`) become `${NAME}`: the shell of the entrypoint expands them from the
    server's environment, as Pterodactyl's images do, so a changed variable needs no new command."""
    return STARTUP_PLACEHOLDER.sub(lambda m: "${" + m.group(1) + "}", startup)
