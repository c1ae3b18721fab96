"""The config-file edits of a server, made before every start as Wings makes them: each file is read and
written through the volume's Sandbox (no link followed, in any component), read only up to a bound, and
replaced atomically. A file that cannot be edited is reported and left alone; the start goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from lightd.errors import LightdError, NotFound
from lightd.templates.config_files import ConfigFileError, apply, edits_of
from lightd.templates.fields import ConfigFile
from lightd.volumes import files
from lightd.volumes.sandbox import Sandbox

if TYPE_CHECKING:
    from lightd.servers.models import ContainerSpec

CONFIG_FILE_MAX_BYTES = 4 * 1024 * 1024
"""A config file larger than this is not edited (SECURITY: unbounded memory on a huge file, advisory 13)."""


def placeholder_values(spec: ContainerSpec, interface: str) -> dict[str, str]:
    """The values `{{…}}` placeholders of config files may name: the Panel's `server.build.*` and Wings'
    `config.docker.interface`; nothing else of the daemon's config is reachable."""
    port = spec.ports[0] if spec.ports else None
    values = {
        "server.build.default.ip": port.ip if port else "0.0.0.0",
        "server.build.default.port": str(port.port) if port else "",
        "server.build.memory": str((spec.limits.memory or 0) // (1024 * 1024)),
        "server.build.cpu": str(int((spec.limits.cpu or 0) * 100)),
        "server.build.disk": str((spec.limits.disk or 0) // (1024 * 1024)),
        "config.docker.interface": interface,
    }
    values.update({f"server.build.env.{k}": v for k, v in spec.environment.items()})
    return values


def edit_files(box: Sandbox, config_files: list[ConfigFile], values: dict[str, str],
               max_bytes: int = CONFIG_FILE_MAX_BYTES) -> list[str]:
    """Edit every file in `box` (blocking: run in a worker thread); the problems, one line each."""
    problems = []
    for config_file in config_files:
        try:
            _edit_one(box, config_file, values, max_bytes)
        except (LightdError, ConfigFileError) as exc:
            problems.append(f"{config_file.file}: {exc}")
    return problems


def _edit_one(box: Sandbox, config_file: ConfigFile, values: dict[str, str], max_bytes: int) -> None:
    try:
        stream, size = box.open_file(config_file.file)  # SECURITY: symlink escape — O_NOFOLLOW walk
    except NotFound:
        data = b""  # Wings creates a missing file, then edits it
    else:
        with stream:
            if size > max_bytes:
                raise ConfigFileError(f"larger than {max_bytes} bytes: not edited")
            data = _read_bounded(stream, max_bytes + 1)
        if len(data) > max_bytes:
            raise ConfigFileError(f"larger than {max_bytes} bytes: not edited")
    new = apply(config_file.parser, data, edits_of(config_file, values))
    if new != data:
        files.write_file(box, config_file.file, new)


def _read_bounded(stream: BinaryIO, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit and (chunk := stream.read(min(1024 * 1024, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
