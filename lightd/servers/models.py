"""The shapes of a server (a lightd container): what clients send, what is stored, what is shown."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lightd.ports import PortSpec
from lightd.templates.fields import ConfigFile, TemplateBinding, check_install_mount
from lightd.timestamps import rfc3339

INTERNAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest], lowercase path components.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_REFERENCE = re.compile(
    rf"^{_REGISTRY}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)

InstallState = Literal["installing", "ready", "failed"]
RuntimeState = Literal["offline", "starting", "running", "stopping", "paused", "restoring", "transferring"]
SIGNALS = ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")


def validate_image(value: str) -> str:
    if not isinstance(value, str) or len(value) > 255 or not IMAGE_REFERENCE.match(value):
        raise ValueError("not a valid image reference (e.g. 'debian:12' or 'registry:5000/team/game:1.2')")
    # The first component is a registry host only when it has a dot, a colon or is localhost; such a
    # host may carry upper case, the rest of the reference may not.
    first, _, rest = value.partition("/")
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else value
    if path.split("@", 1)[0].rsplit(":", 1)[0] != path.split("@", 1)[0].rsplit(":", 1)[0].lower():
        raise ValueError("repository names must be lowercase")
    return value


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory: int | None = Field(default=None, gt=0, le=2**50, strict=True)
    """Bytes (at most 1 PiB: Docker takes an int64, and overhead is added to it)."""
    cpu: float | None = Field(default=None, gt=0, le=1024)
    """Cores (1.0 = one core)."""
    pids: int | None = Field(default=None, ge=16, le=1_000_000, strict=True)
    disk: int | None = Field(default=None, ge=0, le=2**62, strict=True)
    """Bytes of the volume this server may fill; 0 or null: unlimited."""

    @field_validator("memory")
    @classmethod
    def _memory_floor(cls, value: int | None) -> int | None:
        if value is not None and value < 6 * 1024 * 1024:
            raise ValueError("must be at least 6291456 bytes (6 MiB), Docker's minimum")
        return value


class StopConfig(BaseModel):
    """How a graceful stop asks the process to end: a console command, or a signal."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["command", "signal"] = "signal"
    value: str = "SIGTERM"

    @model_validator(mode="after")
    def _check(self) -> StopConfig:
        if self.type == "signal" and self.value.upper() not in SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(SIGNALS)}")
        if self.type == "signal":
            self.value = self.value.upper()
        if self.type == "command" and (not 0 < len(self.value) <= 1024 or "\n" in self.value or "\x00" in self.value):
            raise ValueError("command must be one line of 1 to 1024 characters")
        return self


# Targets a mount may not cover: the container's root and kernel filesystems, and the two paths lightd
# itself binds (the volume and the entrypoint directory).
RESERVED_TARGETS = ("/proc", "/sys", "/dev", "/app/data")


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=4096)
    target: str = Field(min_length=1, max_length=4096)
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(p in ("..", ".") for p in value.split("/")):
            raise ValueError("must be an absolute path without '.' or '..' components")
        # ':' and ',' split Docker's bind and mount strings; control characters have no business here.
        if any(c in value for c in ":,") or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain ':', ',' or control characters")
        return value.rstrip("/") or "/"

    @field_validator("target")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in ("/", "/home/container") or any(value == r or value.startswith(r + "/") for r in RESERVED_TARGETS):
            raise ValueError(f"{value} cannot be a mount target")
        return value


MAX_VOLUME_MOUNTS = 10
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class VolumeMount(BaseModel):
    """Another lightd volume bound into the server's container at `target` (at the next start)."""

    model_config = ConfigDict(extra="forbid")
    volume_id: str = Field(min_length=36, max_length=36)
    target: str = Field(min_length=2, max_length=4096)
    read_only: bool = False

    @field_validator("volume_id")
    @classmethod
    def _volume_id(cls, value: str) -> str:
        if not _UUID.match(value):
            raise ValueError("not a volume id (a lowercase UUID)")
        return value

    _target = field_validator("target")(Mount._absolute.__func__)  # type: ignore[attr-defined]
    _not_reserved = field_validator("target")(Mount._not_reserved.__func__)  # type: ignore[attr-defined]


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or contains it, by component."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _mount_map_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of `mount` names both accepted forms: the list, and upstream Lightd's map."""
    listed = {key: schema.pop(key) for key in ("type", "items", "maxItems") if key in schema}
    schema["anyOf"] = [listed, {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 32,
                                "description": 'upstream Lightd\'s form: {"/container/path": "/host/path"}, read-only'}]


class ContainerSpec(BaseModel):
    """Everything a server is made from; stored as JSON and replayed on reinstall and recovery."""

    model_config = ConfigDict(extra="forbid")
    internal_id: str
    image: str
    volume_id: str = Field(min_length=1, max_length=64)
    startup_command: str = Field(min_length=1, max_length=16_384)
    start_pattern: str | None = Field(default=None, max_length=1024)
    ports: list[PortSpec] = Field(default_factory=list, max_length=256)
    limits: Limits = Field(default_factory=Limits)
    install_script: str | None = Field(default=None, max_length=1024 * 1024)
    install_image: str | None = None
    mount: list[Mount] = Field(default_factory=list, max_length=32, json_schema_extra=_mount_map_schema)
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=MAX_VOLUME_MOUNTS)
    """Other lightd volumes bound into the server container (not the installer's), each at its own target."""
    environment: dict[str, str] = Field(default_factory=dict, max_length=256)
    stop: StopConfig = Field(default_factory=StopConfig)
    restart_on_crash: bool = False
    start_timeout_seconds: float | None = Field(default=None, gt=0, le=86_400)
    description: str = Field(default="", max_length=1024)
    owned_volume: bool = False
    """The volume was made for this container (by a compat front end) and is deleted with it."""
    install_mount: str = "/home/container"
    """Where the installer sees the volume (templates and eggs: `/mnt/server`, as Wings mounts it)."""
    install_entrypoint: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_./-]{1,128}$")
    """The installer's interpreter (an egg's `entrypoint`, e.g. `bash`); none: the script's shebang or /bin/sh."""
    config_files: list[ConfigFile] = Field(default_factory=list, max_length=64)
    """Files of the volume edited before every start (Wings' parsers; lightd/templates/config_files.py)."""
    template: TemplateBinding | None = None
    """The template the server was made from, its variables and their rules (set by lightd, not by clients)."""

    @field_validator("internal_id")
    @classmethod
    def _internal_id(cls, value: str) -> str:
        if not INTERNAL_ID.match(value):
            raise ValueError("1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
        return value

    @field_validator("mount", mode="before")
    @classmethod
    def _mount_map(cls, value: Any) -> Any:
        """Upstream Lightd's form `{"/container/path": "/host/path"}`: one mount per entry, the host path
        the source, read-only as in the list form."""
        if isinstance(value, dict):
            return [{"target": target, "source": source} for target, source in value.items()]
        return value

    @field_validator("image", "install_image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else validate_image(value)

    @field_validator("start_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        # SECURITY: backtracking start pattern. Refused here (create and reinstall) unless it can be
        # matched in linear time; the server compiles it with the same class.
        from lightd.servers.console import StartPattern

        StartPattern(value)
        return value

    @field_validator("environment")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", key) or "\x00" in val:
                raise ValueError(f"bad environment variable {key!r}")
        return value

    @field_validator("install_mount")
    @classmethod
    def _install_mount(cls, value: str) -> str:
        return check_install_mount(value, RESERVED_TARGETS)

    @model_validator(mode="after")
    def _unique_ports(self) -> ContainerSpec:
        keys = [p.key for p in self.ports]
        if len(keys) != len(set(keys)):
            raise ValueError("ports: the same ip/port/protocol is listed twice")
        targets = [m.target for m in self.mount]
        if len(targets) != len(set(targets)):
            raise ValueError("mount: the same target is listed twice")
        return self

    @field_validator("volume_mounts")
    @classmethod
    def _volume_mounts(cls, value: list[VolumeMount], info: ValidationInfo) -> list[VolumeMount]:
        """Targets overlap neither the volume's /home/container, nor a `mount`, nor each other; each volume
        (not the server's own) once."""
        taken = ["/home/container", *(m.target for m in info.data.get("mount") or [])]
        for vm in value:
            clash = next((t for t in taken if _overlaps(vm.target, t)), None)
            if clash is not None:
                raise ValueError(f"{vm.target} overlaps {clash}")
            taken.append(vm.target)
        ids = [vm.volume_id for vm in value]
        if info.data.get("volume_id") in ids or len(ids) != len(set(ids)):
            raise ValueError("a volume is mounted once (the server's own volume is at /home/container)")
        return value


# Fields whose rules grew stricter after specs were stored (RE2 start patterns, mount targets, limit
# bounds); a stored spec that breaks them loses the field rather than keeping the daemon from starting.
_RELAXED_ON_LOAD: dict[str, Any] = {"start_pattern": None, "mount": [], "limits": {}, "volume_mounts": []}


def load_stored_spec(raw: dict[str, Any]) -> tuple[ContainerSpec, list[str]]:
    """A stored spec, and the fields dropped because they break a rule added after it was stored."""
    try:
        return ContainerSpec.model_validate(raw), []
    except ValidationError as exc:
        dropped = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["loc"][0] in _RELAXED_ON_LOAD})
        if not dropped:
            raise
        return ContainerSpec.model_validate({**raw, **{f: _RELAXED_ON_LOAD[f] for f in dropped}}), dropped


class ReinstallRequest(BaseModel):
    """What may change on reinstall; anything left out keeps its current value."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = None
    install_script: str | None = Field(default=None, max_length=1024 * 1024)
    install_image: str | None = None
    startup_command: str | None = Field(default=None, max_length=16_384)
    start_pattern: str | None = Field(default=None, max_length=1024)

    _image = field_validator("image", "install_image")(ContainerSpec._image.__func__)  # type: ignore[attr-defined]
    _pattern = field_validator("start_pattern")(ContainerSpec._pattern.__func__)  # type: ignore[attr-defined]


class RebindRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ports: list[PortSpec] = Field(max_length=256)

    @model_validator(mode="after")
    def _unique(self) -> RebindRequest:
        keys = [p.key for p in self.ports]
        if len(keys) != len(set(keys)):
            raise ValueError("ports: the same ip/port/protocol is listed twice")
        return self


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(min_length=1, max_length=4096)

    @field_validator("command")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL")
        return value


def container_view(record: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """The public shape of one server."""
    spec = record["spec"]
    return {
        "internal_id": record["internal_id"],
        "name": runtime.get("docker_name"),
        # Upstream Lightd's field. The Docker name: Docker accepts it wherever a container id is accepted,
        # and unlike the id it stays the same when lightd recreates the container (rebind, patch, start).
        "container_id": runtime.get("docker_name"),
        "image": spec["image"],
        "volume_id": record["volume_id"],
        "startup_command": spec.get("startup_command", ""),
        "start_pattern": spec.get("start_pattern"),
        "ports": spec.get("ports", []),
        "limits": spec.get("limits", {}),
        "mount": spec.get("mount", []),
        "volume_mounts": spec.get("volume_mounts", []),
        "stop": spec.get("stop"),
        "restart_on_crash": spec.get("restart_on_crash", False),
        "description": spec.get("description", ""),
        "template": {k: spec["template"][k] for k in ("id", "image_label", "variables")} if spec.get("template") else None,
        "install_state": record["install_state"],
        "install_error": record.get("install_error"),
        "state": runtime.get("state", record["state"]),
        "exit_code": record.get("exit_code"),
        "oom_killed": record.get("oom_killed", False),
        "container_missing": runtime.get("container_missing", False),
        "created_at": rfc3339(record["created_at"]),
        "updated_at": rfc3339(record["updated_at"]),
    }
