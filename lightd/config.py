"""config.json: the pydantic model, and how it is loaded, validated, created and written."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from lightd.config_features import (
    BackupConfig,
    CompatConfig,
    MetricsConfig,
    SftpConfig,
    TemplatesConfig,
    TransfersConfig,
)
from lightd.config_types import CorsOrigins, Port, Section

TOKEN_PREFIX = "lightd_"
TOKEN_MIN_LENGTH = 20


def is_valid_token_format(token: str) -> bool:
    """A node or temporary token is `lightd_` followed by enough characters (at least 20 in all)."""
    return token.startswith(TOKEN_PREFIX) and len(token) >= TOKEN_MIN_LENGTH


def generate_token() -> str:
    """A fresh node token: `lightd_` and 43 url-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class ApiConfig(Section):
    host: str = "0.0.0.0"
    port: Port = 8070
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Bodies over this get 413 before they are read."""
    trusted_proxies: list[str] = []
    cors_origins: CorsOrigins = []
    """Origins a browser may call the native API from (a panel's, listed like Wings' allowed_origins; they
    also get credentials) and open console sockets from; empty: none."""


class DefaultLimits(Section):
    """Limits a create gets for every field it leaves out (native and compat creates alike)."""

    memory: int | None = Field(default=1024 * 1024 * 1024, ge=6 * 1024 * 1024)
    """Bytes; null: no memory limit."""
    cpu: float | None = Field(default=1.0, gt=0, le=1024)
    """Cores; null: no CPU limit."""
    pids: int | None = Field(default=None, ge=16, le=1_000_000)
    """null: `docker.pids_limit` applies."""
    disk: int = Field(default=0, ge=0)
    """Bytes of volume disk; 0: unlimited."""


class DockerConfig(Section):
    socket: str = "unix:///var/run/docker.sock"
    network: str = "bridge"
    """Docker network server containers join."""
    container_prefix: str = "lightd-"
    pids_limit: int = Field(default=512, ge=16)
    user: str = Field(default="988:988", pattern=r"^[0-9]{1,9}:[0-9]{1,9}$")
    """uid:gid server containers run as; volumes are owned by it (the install container runs as root,
    then the volume is chowned). "0:0" runs servers as root: never do that on a shared host."""
    default_limits: DefaultLimits = DefaultLimits()
    memory_overhead_bytes: int = Field(default=0, ge=0)
    log_max_size: str = "5m"
    default_image: str = "lightd-test/busybox:latest"
    """Image used by compat front ends when their API names no image we can map."""
    image_map: dict[str, str] = {}
    """Names foreign APIs use (e.g. `ubuntu:20.04`) -> the local image to run for them."""
    allowed_mounts: list[str] = []
    """Host directories a container's `mount` entries may come from (checked by path component)."""
    pull_timeout_seconds: float = Field(default=600, gt=0)
    engine_poll_seconds: float = Field(default=5.0, gt=0)
    """How often the engine is checked while its event stream (which drives crash detection) is down; when it
    comes back, running servers are re-attached."""
    recovery_concurrency: int = Field(default=16, ge=1, le=256)
    """Servers compared with the engine (inspected, re-attached) at once after a daemon start or the engine's
    return; the API serves meanwhile."""
    stats_source: Literal["auto", "docker"] = "auto"
    """Where container stats come from: "auto" reads each container's cgroup files (v1 or v2) in one batch per
    round and falls back to the engine's stats stream where they cannot be read; "docker" always uses the
    stream (one engine connection per running server). GET /system says which is in use."""
    interface: str = "172.17.0.1"
    """The address servers reach the host at (the network's gateway): `{{config.docker.interface}}` in eggs."""


class RemoteConfig(Section):
    enabled: bool = False
    url: str = ""
    token: str = ""
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    outbox_max_rows: int = Field(default=100_000, ge=100)
    """Oldest undelivered updates are dropped (and counted) past this many."""
    request_timeout_seconds: float = Field(default=10.0, gt=0)


class VolumeLimits(Section):
    max_write_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    archive_max_entries: int = Field(default=100_000, ge=1)
    archive_max_total_bytes: int = Field(default=4 * 1024 * 1024 * 1024, ge=1)
    """Extraction stops with 400 when declared or actual sizes exceed this (archive bomb)."""
    archive_max_header_bytes: int = Field(default=1024 * 1024, ge=4096)
    """Largest tar pax / GNU long-name header; tarfile reads one whole into memory (header bomb: 400)."""
    archive_max_index_bytes: int = Field(default=64 * 1024 * 1024, ge=65536)
    """Largest zip central directory; zipfile reads it whole (100,000 entries with 200-byte names: ~27 MiB)."""
    max_depth: int = Field(default=256, ge=8, le=4096)
    """Folder levels a copy or compress walks below its source (deeper: 400 tree_too_deep); extraction
    skips entries deeper than this. Real game servers nest a few dozen levels (mods' Java packages,
    node_modules); past this a tree is an attack, and a bound keeps each operation's time and paths small."""
    usage_max_depth: int = Field(default=4096, ge=8)
    """Levels the disk-usage walk descends; deeper contents are left out and the figure says `partial`."""
    usage_cache_seconds: float = Field(default=60.0, ge=0)
    """How long a measured disk usage serves the disk limit (lightd's own writes are added meanwhile)."""
    max_upload_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    """Largest file of a multipart upload (413, nothing kept); the volume's disk limit applies too."""
    max_upload_files: int = Field(default=100, ge=1, le=10_000)
    """Files one upload request may carry (413 past it, nothing kept)."""
    search_max_results: int = Field(default=500, ge=1, le=100_000)
    """Entries a file search returns; past it the answer says `truncated`."""
    search_max_entries: int = Field(default=200_000, ge=1000)
    """Entries a file search looks at before it stops (and says `truncated`)."""
    pull_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    """Largest file a pull from a URL downloads (declared or streamed); the volume's disk limit applies too."""
    pull_max_concurrent: int = Field(default=3, ge=1, le=64)
    """Pulls running at once per volume; one more is 409 too_many_pulls."""
    pull_timeout_seconds: float = Field(default=3600.0, gt=0)
    """A pull taking longer fails (each connection attempt: 10 s; each read: 60 s)."""
    pull_allowed_networks: list[str] = []
    """CIDRs a pull may reach although they are refused by default (loopback, private, link-local, CGNAT,
    metadata...): the admin's explicit allow-list."""

    @field_validator("pull_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not a network (CIDR): {network!r}") from None
        return value


class TokenConfig(Section):
    default_ttl_seconds: int = Field(default=600, ge=1)
    max_ttl_seconds: int = Field(default=86_400, ge=1)
    signed_url_max_ttl_seconds: int = Field(default=3600, ge=1)
    """Longest life of a signed one-shot URL (POST /auth/signed-urls)."""


class ConsoleConfig(Section):
    history_lines: int = Field(default=1000, ge=10)
    history_bytes: int = Field(default=1024 * 1024, ge=1024)
    line_max_bytes: int = Field(default=64 * 1024, ge=256)
    install_log_bytes: int = Field(default=1024 * 1024, ge=4096, le=256 * 1024 * 1024)
    """Install script output kept per server, in memory during the run and in install.log: the last this
    many bytes (older lines are dropped, and the file says how many)."""
    throttle_lines: int = Field(default=2000, ge=0)
    """Lines per window before output is dropped; 0 disables the throttle."""
    throttle_window_ms: int = Field(default=100, ge=10)
    max_sockets: int = Field(default=30, ge=1)
    send_queue: int = Field(default=64, ge=1)
    """Lines (and other messages) queued per console socket, oldest dropped when full; the socket uses at
    least throttle_lines so a burst the throttle admitted reaches every client that keeps up."""
    max_frame_bytes: int = Field(default=32 * 1024, ge=256)
    inbound_rate: float = Field(default=5.0, gt=0)
    inbound_burst: int = Field(default=10, ge=1)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    stats_interval_seconds: float = Field(default=2.0, gt=0)


class ServerDefaults(Section):
    stop_timeout_seconds: float = Field(default=30.0, gt=0)
    start_timeout_seconds: float | None = None
    crash_restart_guard_seconds: float = Field(default=60.0, ge=0)
    max_timers: int = Field(default=65536, ge=1024)
    """Bound of the timer wheel (stats rounds, start timeouts...); a timer over it is refused and logged."""


class Config(Section):
    token: str = Field(default_factory=generate_token)
    data_dir: Path = Path("/var/lib/lightd")
    api: ApiConfig = ApiConfig()
    docker: DockerConfig = DockerConfig()
    remote: RemoteConfig = RemoteConfig()
    compat: CompatConfig = CompatConfig()
    volumes: VolumeLimits = VolumeLimits()
    tokens: TokenConfig = TokenConfig()
    console: ConsoleConfig = ConsoleConfig()
    servers: ServerDefaults = ServerDefaults()
    backups: BackupConfig = BackupConfig()
    sftp: SftpConfig = SftpConfig()
    templates: TemplatesConfig = TemplatesConfig()
    transfers: TransfersConfig = TransfersConfig()
    metrics: MetricsConfig = MetricsConfig()
    event_queue_size: int = Field(default=1024, ge=16)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    """"json": one JSON object per log line (time, level, logger, message, request_id, server, event)."""

    @field_validator("token")
    @classmethod
    def _token_format(cls, value: str) -> str:
        if not is_valid_token_format(value):
            raise ValueError(f"must start with {TOKEN_PREFIX!r} and be at least {TOKEN_MIN_LENGTH} characters")
        return value

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "lightd.db"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def backups_dir(self) -> Path:
        """Local backups (`<server>/<backup id>.tar.zst`) and restores being staged (`.restores/`): 0700."""
        return self.data_dir / "backups"

    @property
    def sftp_host_key_path(self) -> Path:
        """The SFTP server's host key: `sftp.host_key_path`, or `<data_dir>/sftp_host_key`."""
        return Path(self.sftp.host_key_path) if self.sftp.host_key_path else self.data_dir / "sftp_host_key"

    @property
    def transfers_dir(self) -> Path:
        """Incoming transfers being extracted (`<transfer id>/staged`), on the volumes' file system: 0700."""
        return self.data_dir / "transfers"

    @property
    def volume_restores_dir(self) -> Path:
        """Snapshot restores being staged (`<volume id>/staged`), on the volumes' file system: 0700."""
        return self.data_dir / "volume-restores"

    @property
    def mounts_dir(self) -> Path:
        """Pin points of servers' host mounts (lightd.servers.mounts)."""
        return self.data_dir / "mounts"


def secure_data_dir(config: Config) -> None:
    """Create `data_dir` and make it and `volumes/` 0700: no local account may reach a volume (a file a
    server made there must not be runnable by anyone on the host). Blocking."""
    for path in (config.data_dir, config.volumes_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # SECURITY: setuid files in volumes — nobody on the host can reach them


class ConfigError(Exception):
    """config.json is missing, unreadable or invalid; the message is one line naming the key."""


def resolve_config_path(cli_value: str | None) -> Path:
    """`--config`, else `LIGHTD_CONFIG`, else `./config.json`."""
    return Path(cli_value or os.environ.get("LIGHTD_CONFIG") or "config.json")


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(root)"
    return f"{key}: {first['msg']}"


def parse_config(raw: Any) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {describe_validation_error(exc)}") from None


def _read_raw(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _parse_at(path: Path, raw: Any) -> Config:
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_config(path: Path) -> Config:
    return _parse_at(path, _read_raw(path))


def write_config(path: Path, config: Config) -> None:
    """Write atomically with mode 0600: the file holds the node token."""
    _write_raw(path, config.model_dump(mode="json"))


def _write_raw(path: Path, raw: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(raw, indent=2) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_config(path: Path) -> tuple[Config, bool]:
    """Load the config; with none at `path`, write a fresh one (new random token). Returns (config, created).
    A config written by hand without a `token` gets a fresh one written into it (its other keys kept as they
    are): a token made anew at every load would let no client in, and `--token what` would print another."""
    if path.exists():
        raw = _read_raw(path)
        if not isinstance(raw, dict) or "token" in raw:
            return _parse_at(path, raw), False
        raw["token"] = generate_token()
        config = _parse_at(path, raw)  # the rest checked before anything is written
        try:
            _write_raw(path, raw)
        except OSError as exc:
            raise ConfigError(f"{path}: no token, and a fresh one cannot be written into it ({exc.strerror}): "
                              f'add "token": "lightd_<at least 13 more characters>"') from None
        logging.getLogger("lightd").warning("lightd: %s had no token: wrote a fresh one into it (`lightd --token "
                                            "what` prints it)", path)
        return config, False
    config = Config()
    write_config(path, config)
    return config, True
