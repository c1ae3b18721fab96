"""DockerEnvironment: the Environment protocol on a Docker engine. Builds hardened container configs,
runs one-shot install containers, attaches consoles and reads stats."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

import orjson

from lightd.config import DockerConfig
from lightd.docker.cgroup_stats import CgroupStats
from lightd.docker.attached_console import AttachedConsole
from lightd.docker.client import DockerClient, translate
from lightd.docker.monitor import EngineMonitor
from lightd.docker.stats_document import sample_from_stats
from lightd.errors import Conflict, LightdError, NotFound
from lightd.servers.environment import ContainerStatus, EngineEvent, LimitsUpdate, StatsSample
from lightd.servers.models import ContainerSpec, Limits
from lightd.servers.mounts import MountPins

log = logging.getLogger(__name__)

CONTAINER_HOME = "/home/container"
DATA_DIR = "/app/data"
# Wings' list: capabilities a game server never needs.
DROPPED_CAPABILITIES = [
    "SETPCAP", "MKNOD", "AUDIT_WRITE", "NET_RAW", "DAC_OVERRIDE", "FOWNER", "FSETID",
    "NET_BIND_SERVICE", "SYS_CHROOT", "SETFCAP",
]
INSTALLER_KEEPS = ("DAC_OVERRIDE", "FOWNER")
LABEL_MANAGED = "lightd.managed"
LABEL_ID = "lightd.internal_id"
LABEL_ROLE = "lightd.role"
LABEL_CONFIG = "lightd.config"
"""A digest of the create body the server container was made from, less its resources (which `docker
update` changes in place and which are compared one by one): a start recreates a container made otherwise."""
# Limit name -> the HostConfig field `docker update` changes, as in a create body.
RESOURCE_FIELDS = {"memory": "Memory", "cpu": "NanoCpus", "pids": "PidsLimit"}
RESOURCE_KEYS = ("Memory", "MemorySwap", "NanoCpus", "PidsLimit")
RUNNING_STATES = ("running", "paused", "restarting")  # a listed container's `State` with a live process


async def _complete(coro: Any) -> Any:
    """Await an engine call to its end even when the caller is cancelled meanwhile (then re-raise the
    cancellation): a cancelled `docker create` may still be carried out by the engine, and a container
    nobody knows of would be left behind by a delete that cancelled the install."""
    task = asyncio.ensure_future(coro)  # awaited below on every path
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await task
        except Exception:  # noqa: BLE001 - the create failed after all: nothing to clean up
            pass
        raise


class DockerEnvironment:
    """Servers as Docker containers named `{prefix}{internal_id}`."""

    def __init__(self, client: DockerClient, config: DockerConfig, mounts: MountPins,
                 volume_path_of: Callable[[str], Path] | None = None) -> None:
        self.client = client
        self.config = config
        self.mounts = mounts
        self.volume_path_of = volume_path_of  # VolumeService.path_of: where `volume_mounts` are on the host
        # Server containers only: an installer's exit is seen by the install that runs it.
        self.monitor = EngineMonitor(client, {"lightd.prefix": config.container_prefix, LABEL_ROLE: "server"}, LABEL_ID)
        self.cgroup_stats = CgroupStats(client, self.name_of, config.stats_source)

    def name_of(self, internal_id: str) -> str:
        return f"{self.config.container_prefix}{internal_id}"

    def installer_name_of(self, internal_id: str) -> str:
        return f"{self.config.container_prefix}{internal_id}-installer"

    async def available(self) -> bool:
        return await self.client.ping()

    async def ensure_image(self, image: str, on_progress: Callable[[dict[str, Any]], None]) -> bool:
        if await self.client.image_exists(image):
            return False
        async with asyncio.timeout(self.config.pull_timeout_seconds):
            async for record in self.client.pull(image):
                on_progress(record)
        if not await self.client.image_exists(image):
            raise NotFound(f"image {image} could not be pulled")
        return True

    def _labels(self, spec: ContainerSpec, role: str) -> dict[str, str]:
        return {LABEL_MANAGED: "true", LABEL_ID: spec.internal_id, LABEL_ROLE: role,
                "lightd.prefix": self.config.container_prefix}

    def _resources(self, limits: Limits) -> dict[str, Any]:
        """The HostConfig resources of `limits` (a limit left out is absent: no limit)."""
        resources: dict[str, Any] = {"PidsLimit": limits.pids or self.config.pids_limit}
        if limits.memory:
            resources["Memory"] = limits.memory + self.config.memory_overhead_bytes
            resources["MemorySwap"] = resources["Memory"]
        if limits.cpu:
            resources["NanoCpus"] = int(limits.cpu * 1_000_000_000)
        return resources

    def _hardening(self, spec: ContainerSpec) -> dict[str, Any]:
        host: dict[str, Any] = {
            "SecurityOpt": ["no-new-privileges"],
            "CapDrop": DROPPED_CAPABILITIES,
            "Tmpfs": {"/tmp": "rw,exec,nosuid,size=100m"},
            "Privileged": False,
            "Init": True,  # docker-init as PID 1: signals reach the server, zombies are reaped
            "LogConfig": {"Type": "local", "Config": {"max-size": self.config.log_max_size, "max-file": "1", "compress": "false"}},
        }
        return {**host, **self._resources(spec.limits)}

    def _binds(self, spec: ContainerSpec, volume_path: Path, data_path: Path, home: str = CONTAINER_HOME) -> list[str]:
        binds = [f"{volume_path}:{home}:rw", f"{data_path}:{DATA_DIR}:ro"]
        # SECURITY: symlink mount escape — Docker binds the pin point (a bind of the checked directory,
        # made before every start by MountPins), never the tenant-reachable source path itself.
        binds += [f"{self.mounts.pin_path(spec.internal_id, i)}:{m.target}:{'ro' if m.read_only else 'rw'}"
                  for i, m in enumerate(spec.mount)]
        return binds

    def _volume_binds(self, spec: ContainerSpec) -> list[str]:
        """Binds of the other lightd volumes the server mounts (its container only: the installer sees its own
        volume). The source is the volume's directory: lightd made it, under the volumes root a container
        never sees, so no component of the path is a tenant's; what is inside it Docker does not follow."""
        if not spec.volume_mounts:
            return []
        if self.volume_path_of is None:
            raise LightdError("volume_mounts: this environment was built without the volumes' paths")
        return [f"{self.volume_path_of(m.volume_id)}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.volume_mounts]

    def server_config(self, spec: ContainerSpec, volume_path: Path, data_path: Path) -> dict[str, Any]:
        """The Docker create body of a server container."""
        exposed: dict[str, dict[str, Any]] = {}
        bindings: dict[str, list[dict[str, str]]] = {}
        for port in spec.ports:
            key = f"{port.port}/{port.protocol}"
            exposed[key] = {}
            bindings.setdefault(key, []).append({"HostIp": port.ip, "HostPort": str(port.port)})
        env = server_environment(spec, CONTAINER_HOME)
        host = {
            **self._hardening(spec),
            "Binds": self._binds(spec, volume_path, data_path) + self._volume_binds(spec),
            "PortBindings": bindings,
            "NetworkMode": self.config.network,
        }
        config = {
            "Image": spec.image,
            # SECURITY: setuid files — the server runs unprivileged (docker.user); only the installer is root.
            "User": self.config.user,
            "Cmd": ["/bin/sh", f"{DATA_DIR}/entrypoint.sh"],
            "WorkingDir": CONTAINER_HOME,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": self._labels(spec, "server"),
            "ExposedPorts": exposed,
            "OpenStdin": True,
            "StdinOnce": False,
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "HostConfig": host,
        }
        config["Labels"][LABEL_CONFIG] = _digest(config)
        return config

    async def create(self, spec: ContainerSpec, volume_path: Path, data_path: Path) -> str:
        name, config = self.name_of(spec.internal_id), self.server_config(spec, volume_path, data_path)
        try:
            return await _complete(self.client.create_container(name, config))
        except Conflict:  # the name is taken: the old container goes (one engine call less for a new one)
            await self.client.remove_container(name)
            return await _complete(self.client.create_container(name, config))

    async def is_current(self, spec: ContainerSpec, volume_path: Path, data_path: Path,
                         status: ContainerStatus | None = None) -> bool:
        """False when the server's container was made from another spec or daemon config than `spec` and the
        config now give (PATCH, a config.json change): it must be recreated. True when there is none."""
        if status is None or (status.exists and status.fingerprint is None):  # a listed one: inspect it
            status = await self.status(spec.internal_id)
        if not status.exists:
            return True
        wanted = self.server_config(spec, volume_path, data_path)
        return status.fingerprint == _fingerprint(wanted["Labels"], wanted["HostConfig"])

    async def update_limits(self, internal_id: str, limits: Limits) -> LimitsUpdate:
        """Apply `limits` to the server's container now, running or not (`docker update`). A limit removed
        is not applied: the engine reads 0 as "unchanged", so that takes a recreate (at the next start)."""
        resources = self._resources(limits)
        warnings = await self.client.update_container(self.name_of(internal_id), resources)
        applied = tuple(name for name, key in RESOURCE_FIELDS.items() if key in resources)
        return LimitsUpdate(applied=applied, warnings=tuple(warnings))

    async def remove(self, internal_id: str) -> None:
        await self.client.remove_container(self.name_of(internal_id))
        await self.client.remove_container(self.installer_name_of(internal_id))
        # Anything else carrying the server's label (a create that raced a delete).
        for doc in await self.client.list_containers({LABEL_ID: internal_id, "lightd.prefix": self.config.container_prefix}):
            await self.client.remove_container(doc["Id"])

    async def remove_leftovers(self, known: set[str]) -> list[str]:
        """Remove installer containers (no install survives a daemon restart) and server containers of
        this prefix that belong to no known server; the names removed."""
        removed = []
        for doc in await self.client.list_containers({"lightd.prefix": self.config.container_prefix}):
            labels = doc.get("Labels") or {}
            if labels.get(LABEL_ROLE) == "installer" or labels.get(LABEL_ID) not in known:
                await self.client.remove_container(doc["Id"])
                removed.append(((doc.get("Names") or [doc["Id"]])[0]).lstrip("/"))
        return removed

    async def status(self, internal_id: str) -> ContainerStatus:
        doc = await self.client.inspect_container(self.name_of(internal_id))
        if doc is None:
            return ContainerStatus(exists=False)
        state = doc.get("State") or {}
        return ContainerStatus(
            exists=True,
            running=bool(state.get("Running")),
            paused=bool(state.get("Paused")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=state.get("StartedAt"),
            fingerprint=_fingerprint((doc.get("Config") or {}).get("Labels") or {}, doc.get("HostConfig") or {}),
        )

    async def statuses(self) -> dict[str, ContainerStatus]:
        docs = await self.client.list_containers({"lightd.prefix": self.config.container_prefix, LABEL_ROLE: "server"})
        return {doc["Labels"][LABEL_ID]: ContainerStatus(exists=True, running=doc.get("State") in RUNNING_STATES,
                                                         paused=doc.get("State") == "paused")
                for doc in docs if (doc.get("Labels") or {}).get(LABEL_ID)}

    async def attach(self, internal_id: str) -> AttachedConsole:
        console = AttachedConsole(self.client.attach(self.name_of(internal_id)))
        try:
            await console.connect()  # now: output must be attached before the start
        except BaseException as exc:
            await console.close()
            if isinstance(exc, Exception) and not isinstance(exc, LightdError):
                raise translate(exc, f"attach {internal_id}") from exc
            raise
        return console

    async def start(self, internal_id: str) -> None:
        await self.client.start_container(self.name_of(internal_id))

    async def signal(self, internal_id: str, signal: str) -> None:
        await self.client.kill_container(self.name_of(internal_id), signal)

    async def pause(self, internal_id: str) -> None:
        await self.client.pause_container(self.name_of(internal_id))

    async def unpause(self, internal_id: str) -> None:
        await self.client.unpause_container(self.name_of(internal_id))

    async def tail_logs(self, internal_id: str, lines: int) -> list[str]:
        return await self.client.tail_logs(self.name_of(internal_id), lines)

    async def run_install(
        self, spec: ContainerSpec, volume_path: Path, data_path: Path, on_output: Callable[[bytes], None]
    ) -> int:
        name = self.installer_name_of(spec.internal_id)
        await self.client.remove_container(name)
        script = spec.install_script or ""
        # A script with a shebang runs with its own interpreter; anything else with /bin/sh.
        cmd = [f"{DATA_DIR}/install.sh"] if script.startswith("#!") else ["/bin/sh", f"{DATA_DIR}/install.sh"]
        if spec.install_entrypoint:  # an egg's `entrypoint`: Wings runs [entrypoint, script]
            cmd = [spec.install_entrypoint, f"{DATA_DIR}/install.sh"]
        # The volume where the spec says (Wings: /mnt/server), with the server's environment, as Wings does.
        host = {**self._hardening(spec), "Binds": self._binds(spec, volume_path, data_path, spec.install_mount),
                "NetworkMode": self.config.network}
        host.pop("Init", None)
        # The installer is root and keeps the right to write files it does not own: after the first
        # install the volume belongs to docker.user (a reinstall writes into it). It is chowned back after.
        host["CapDrop"] = [cap for cap in DROPPED_CAPABILITIES if cap not in INSTALLER_KEEPS]
        config = {
            "Image": spec.install_image or spec.image,
            "Cmd": cmd,
            "WorkingDir": spec.install_mount,
            "Env": [f"{k}={v}" for k, v in server_environment(spec, spec.install_mount).items()],
            "Labels": self._labels(spec, "installer"),
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "HostConfig": host,  # never privileged (Wings advisory: privileged installer = escape)
        }
        try:
            await _complete(self.client.create_container(name, config))
            console = AttachedConsole(self.client.attach(name))
            try:
                await console.connect()
                await self.client.start_container(name)
                while (chunk := await console.read()) is not None:
                    on_output(chunk)
            finally:
                await console.close()
            return await self.client.wait_container(name)
        finally:
            await self.client.remove_container(name)

    async def stats(self, internal_id: str) -> AsyncIterator[StatsSample]:
        try:
            async for doc in self.client.stats_stream(self.name_of(internal_id)):
                if not doc.get("read", "").startswith("0001"):
                    yield sample_from_stats(doc)
        except LightdError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"stats {internal_id}") from exc

    async def sample_stats(self, internal_ids: Collection[str], *, spread: float = 0.0) -> dict[str, StatsSample | None]:
        return await self.cgroup_stats.sample(internal_ids, spread)

    def stats_source(self) -> str:
        return self.cgroup_stats.source()

    async def exec(self, internal_id: str, cmd: list[str], stdin: bytes | None = None) -> tuple[int, str]:
        return await self.client.exec(self.name_of(internal_id), cmd, stdin=stdin)

    async def addresses(self, internal_id: str) -> tuple[str | None, str | None]:
        doc = await self.client.inspect_container(self.name_of(internal_id))
        settings = (doc or {}).get("NetworkSettings") or {}
        networks = [n for n in (settings.get("Networks") or {}).values() if n]
        ipv4 = settings.get("IPAddress") or next((n["IPAddress"] for n in networks if n.get("IPAddress")), None)
        ipv6 = next((n["GlobalIPv6Address"] for n in networks if n.get("GlobalIPv6Address")), None)
        return ipv4 or None, ipv6

    def events(self) -> AsyncIterator[EngineEvent]:
        return self.monitor.events()

    async def engine_info(self) -> dict[str, Any]:
        return await self.client.info()

    async def engine_version(self) -> dict[str, Any]:
        return await self.client.version()

    async def list_images(self) -> list[dict[str, Any]]:
        return await self.client.list_images()

    async def image_exists(self, image: str) -> bool:
        return await self.client.image_exists(image)

    async def network_exists(self, name: str) -> bool:
        return await self.client.network_exists(name)


def server_environment(spec: ContainerSpec, home: str) -> dict[str, str]:
    """The environment of the server's containers: its own, then STARTUP, HOME, SERVER_MEMORY (MiB) and the
    first port's SERVER_PORT and SERVER_IP, as Wings sets them."""
    env = {**spec.environment, "STARTUP": spec.startup_command, "HOME": home,
           "SERVER_MEMORY": str((spec.limits.memory or 0) // (1024 * 1024))}
    if spec.ports:
        env.setdefault("SERVER_PORT", str(spec.ports[0].port))
        env.setdefault("SERVER_IP", spec.ports[0].ip)
    return env


def _fingerprint(labels: dict[str, Any], host: dict[str, Any]) -> tuple[Any, ...]:
    """What `is_current` compares: the config digest and the resources `docker update` changes in place."""
    return (labels.get(LABEL_CONFIG), *(host.get(key) or 0 for key in RESOURCE_KEYS))


def _digest(config: dict[str, Any]) -> str:
    """LABEL_CONFIG of a server create body."""
    host = {k: v for k, v in config["HostConfig"].items() if k not in RESOURCE_KEYS}
    labels = {k: v for k, v in config["Labels"].items() if k != LABEL_CONFIG}
    body = {**config, "HostConfig": host, "Labels": labels}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
