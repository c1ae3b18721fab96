"""The config sections of the features beside the core: the compat front ends, backups, SFTP, templates,
transfers between nodes and metrics (`lightd.config.Config` has one field per section)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from lightd.config_types import CorsOrigins, Port, Section, absolute_or_empty


class CompatFrontEnd(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port
    require_token: bool = False
    cors_origins: CorsOrigins = ["*"]
    """Origins a browser may call this front end from (mounted and on its own port), also for its sockets;
    `"*"` any (as the real projects), an origin listed by name also gets credentials."""
    static_dir: Annotated[str, AfterValidator(absolute_or_empty)] = ""
    """A copy of the project's own web UI, served on this front end's own port after its API routes."""


class LxcToolsFrontEnd(CompatFrontEnd):
    authorized_keys_file: str = ""
    """Public keys `POST /api/containers/{name}/authkey` deploys when the request names none (the real
    tool copies the host root's authorized_keys); empty: such a request is refused with 400."""


class LxdPanelFrontEnd(CompatFrontEnd):
    monitor_interval_seconds: float = Field(default=5.0, gt=0)
    """How often `WS /ws/monitor` pushes an update (the real panel: every 5 s)."""


class ProxiCloudFrontEnd(CompatFrontEnd):
    flavour: Literal["doc", "app"] = "doc"
    """Which ProxiCloud API is served: the seed document's ("doc") or the one the real Next.js web app
    calls ("app": bare arrays, `{"error"}`, volumes, projects)."""


class CompatConfig(Section):
    lxc_tools: LxcToolsFrontEnd = LxcToolsFrontEnd(port=5000)
    proxicloud: ProxiCloudFrontEnd = ProxiCloudFrontEnd(port=8080)
    lxd_panel: LxdPanelFrontEnd = LxdPanelFrontEnd(port=8000)
    container_codes: CompatFrontEnd = CompatFrontEnd(port=8090)
    mount_on_main: bool = True
    """Also serve every front end under /compat/<name> on the main port (token required there)."""


class S3BackupConfig(Section):
    """Where `adapter: "s3"` backups go: any S3-compatible store."""

    endpoint: str = ""
    """e.g. `https://s3.eu-central-1.amazonaws.com` or a MinIO URL; empty: AWS's own for `region`."""
    region: str = "us-east-1"
    bucket: str = ""
    """Empty: S3 backups are refused (400)."""
    access_key: str = ""
    secret_key: str = ""
    prefix: str = "lightd/"
    """Objects are `<prefix><server>/<backup id>.tar.<zst|gz>`."""
    part_size_mib: int = Field(default=16, ge=5, le=5120)
    """Multipart upload part size (S3's minimum is 5 MiB): at most two parts are held in memory per backup."""


class BackupConfig(Section):
    compression: Literal["zstd", "gzip"] = "zstd"
    """Default archive compression (a request may choose the other)."""
    zstd_level: int = Field(default=3, ge=1, le=19)
    zstd_threads: int = Field(default=1, ge=0, le=64)
    """zstd worker threads beside the thread that reads the volume (0: that thread compresses too). One
    overlaps reading and compressing; more only pay on more cores (each adds ~10 MB of buffers)."""
    write_limit_mib_s: float = Field(default=0, ge=0)
    """I/O rate limit of a backup: MiB/s of volume data read into the archive (0: unlimited). A backup
    otherwise reads the disk as fast as it can, starving the servers on it."""
    max_local_bytes: int = Field(default=50 * 1024**3, ge=0)
    """Bytes of local backups one server may keep (0: unlimited); a backup that would pass it fails, and
    a new one is refused while the server is already at it (409 backup_quota_exceeded)."""
    max_per_server: int = Field(default=100, ge=1, le=10_000)
    """Backups recorded per server (local and S3); one more is 409."""
    max_running: int = Field(default=2, ge=1, le=64)
    """Backups and restores running at once on the node; more wait their turn."""
    restore_max_entries: int = Field(default=2_000_000, ge=1)
    """Entries a restore extracts before it fails (the volume untouched)."""
    restore_max_bytes: int = Field(default=1024**4, ge=1)
    """Bytes a restore extracts before it fails (the volume untouched)."""
    s3: S3BackupConfig = S3BackupConfig()


class SftpConfig(Section):
    """The built-in SFTP server (lightd/sftp): players reach their server's volume with FileZilla or WinSCP."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: Port = 2022
    host_key_path: Annotated[str, AfterValidator(absolute_or_empty)] = ""
    """The server's ed25519 host key, generated (0600) on first start; empty: `<data_dir>/sftp_host_key`."""
    max_sessions_per_user: int = Field(default=10, ge=1, le=1000)
    """SFTP sessions one login (a token, or a panel user on one server) may hold open; one more is refused."""
    read_only_servers: list[str] = []
    """Servers whose SFTP sessions are read-only (as are those of suspended, restoring or transferring ones)."""
    login_failures_per_ip: int = Field(default=10, ge=1)
    """Failed logins one client address may make per `login_window_seconds`; then it is refused until the
    window ends, without checking."""
    login_failures_per_user: int = Field(default=5, ge=1)
    """The same per username (the whole `<name>.<server id>`)."""
    login_window_seconds: float = Field(default=60.0, gt=0)
    login_tracked_max: int = Field(default=10_000, ge=16)
    """Addresses and usernames remembered (each); past it the least recently failed is forgotten."""
    login_timeout_seconds: float = Field(default=30.0, gt=0)
    """A connection that has not logged in by then is closed."""
    max_open_files: int = Field(default=64, ge=1, le=4096)
    """Open file and directory handles per session; one more is refused."""
    max_connections: int = Field(default=512, ge=1)
    """SSH connections at once, logged in or not; more are closed at once."""


class TemplatesConfig(Section):
    dirs: list[Path] = []
    """Directories of templates (`<id>.json`, lightd's form or an egg) loaded at start-up, after the shipped
    `install-scripts/`; a later one with the same id replaces an earlier one."""
    timezone: str = Field(default="UTC", pattern=r"^[A-Za-z0-9_+\-/]{1,64}$")
    """TZ of servers made from a template (Wings' system.timezone)."""
    max_stored: int = Field(default=1000, ge=1, le=100_000)
    """Templates added over the API; one more is 409."""


class TransfersConfig(Section):
    """Moving a server to another lightd node (lightd/transfers): this node as source and as target."""

    zstd_level: int = Field(default=3, ge=1, le=19)
    zstd_threads: int = Field(default=1, ge=0, le=64)
    """As `backups.zstd_threads`: compression threads beside the one that reads the volume."""
    stop_timeout_seconds: float = Field(default=60.0, gt=0)
    """How long the graceful stop before a transfer waits before it kills the server."""
    rate_limit_mib_s: float = Field(default=0, ge=0)
    """MiB/s of volume data a transfer reads (0: unlimited): keeps a move from saturating the disk or link."""
    connect_timeout_seconds: float = Field(default=30.0, gt=0)
    idle_timeout_seconds: float = Field(default=120.0, gt=0)
    """A transfer whose stream moves no byte for this long (either side) fails."""
    prepare_timeout_seconds: float = Field(default=900.0, gt=0)
    """How long the target may take to accept a transfer (it pulls the server's image first)."""
    commit_timeout_seconds: float = Field(default=300.0, gt=0)
    """How long the source waits, after the last byte, for the target to verify and create the server."""
    max_incoming: int = Field(default=2, ge=1, le=64)
    """Transfers this node receives at once; one more is 409."""
    max_bytes: int = Field(default=1024**4, ge=1)
    """Bytes an incoming transfer may extract (and compressed bytes it may receive) before it is refused."""
    max_entries: int = Field(default=2_000_000, ge=1)
    """Entries an incoming transfer may extract before it is refused."""
    min_free_bytes: int = Field(default=1024**3, ge=0)
    """Disk space the target keeps free: a transfer whose volume would leave less is refused before it streams."""


class MetricsConfig(Section):
    """`GET /metrics` (Prometheus text format): per-server CPU, memory, network, disk and state, console lines
    and drops, the outbox, HTTP latency per route, the engine's availability."""

    enabled: bool = True
    token: str = ""
    """A token only for scraping (`Authorization: Bearer <token>`), so a Prometheus server need not hold the
    node token; the node token is accepted too. Empty: the node token only."""
