"""Container stats read from the kernel: each container's cgroup files (CPU, memory, pids, block I/O) and
the network counters of its init process's namespace (`/proc/<pid>/net/dev`). One read of a few small
files per container, where a Docker stats stream costs the engine a goroutine, a cgroup read and a JSON
document per container per second.

Where a container's cgroup lives is Docker's knowledge: the cgroup version mounted on the host, the engine's
cgroup driver (`cgroupfs`: `<parent>/<id>`, parent `/docker`; `systemd`: `<slice path>/docker-<id>.scope`,
slice `system.slice`) and the container's own `HostConfig.CgroupParent`. Every read here blocks: the
environment runs one batch per sampling round in a worker thread."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lightd.servers.environment import StatsSample

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")
MAX_FILE_BYTES = 1 << 20
PAGE = 4096
V1_MAX = 1 << 62
"""cgroup v1 writes "no limit" as a number near 2**63 (page-rounded): anything above this is none."""


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where the engine puts containers' cgroups on this host."""

    version: int  # 1 or 2
    driver: str  # "cgroupfs" or "systemd"
    root: Path = CGROUP_ROOT
    proc: Path = PROC_ROOT

    @property
    def source(self) -> str:
        return f"cgroup_v{self.version}"

    def relative(self, container_id: str, parent: str = "") -> str:
        """The container's cgroup below a hierarchy's root (the same for every v1 controller)."""
        if self.driver == "systemd":
            return f"{_expand_slice(parent or 'system.slice')}/docker-{container_id}.scope"
        return f"{(parent or '/docker').strip('/')}/{container_id}"


def _expand_slice(slice_name: str) -> str:
    """systemd's nesting of a slice name: `a-b.slice` lives in `a.slice/a-b.slice`."""
    if not slice_name.endswith(".slice") or slice_name == "-.slice":
        return slice_name.strip("/")
    stem = slice_name[: -len(".slice")]
    parts = stem.split("-")
    return "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def detect_layout(driver: str | None, engine_version: str | int | None, root: Path = CGROUP_ROOT,
                  proc: Path = PROC_ROOT) -> CgroupLayout | None:
    """The layout from the engine's `CgroupDriver` and `CgroupVersion` checked against what is mounted at
    `root` (blocking: a few stats); None when the files cannot be used (another driver, nothing mounted,
    a v1 host without the memory or cpuacct hierarchy)."""
    if driver not in ("cgroupfs", "systemd"):
        return None
    unified = (root / "cgroup.controllers").is_file()
    v1 = (root / "memory").is_dir() and (root / "cpuacct").is_dir()
    version = int(engine_version) if str(engine_version or "") in ("1", "2") else (2 if unified else 1)
    if (version == 2 and not unified) or (version == 1 and not v1):
        return None
    return CgroupLayout(version=version, driver=driver, root=root, proc=proc)


@dataclass(frozen=True, slots=True)
class CgroupTarget:
    """One container to read: its engine id, cgroup parent and init pid."""

    container_id: str
    parent: str
    pid: int


class ContainerFiles(NamedTuple):
    """The files of one container a round reads."""

    net: str
    memory_stat: str
    usage: str
    limit: str
    cpu: str
    io: str
    pids: str


@dataclass(frozen=True, slots=True)
class Counters:
    """Raw counters of one container at one instant (`cpu_ns` cumulative, `at_ns` monotonic)."""

    cpu_ns: int
    at_ns: int
    memory_bytes: int
    memory_limit_bytes: int
    pids: int
    read_bytes: int
    write_bytes: int
    rx_bytes: int
    tx_bytes: int


class CgroupReader:
    """Reads containers' counters and turns two readings of one container into a StatsSample (CPU as
    `docker stats` gives it: percent of one core over the interval, summed over cores)."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self._host_memory = _host_memory(layout.proc)
        self._previous: dict[str, Counters] = {}
        self._files: dict[CgroupTarget, ContainerFiles] = {}

    def sample_many(self, targets: dict[str, CgroupTarget]) -> dict[str, StatsSample | None]:
        """Reads (blocking) of one round or part of one: a sample per key read; None for a container that
        could not be read."""
        out: dict[str, StatsSample | None] = {}
        for key, target in targets.items():
            try:
                now = self.read(target)
            except (OSError, ValueError, IndexError):
                self._previous.pop(key, None)
                out[key] = None
                continue
            out[key] = self._sample(self._previous.get(key), now)
            self._previous[key] = now
        return out

    def keep_only(self, targets: dict[str, CgroupTarget]) -> None:
        """Forget the counters and paths of every container but these (those of a round, before its reads)."""
        for key in set(self._previous) - set(targets):
            del self._previous[key]
        live = set(targets.values())
        self._files = {t: f for t, f in self._files.items() if t in live}

    def files_of(self, target: CgroupTarget) -> ContainerFiles:
        """The paths of one container's files, as strings (made once per container: a round reads 500)."""
        files = self._files.get(target)
        if files is None:
            rel = self.layout.relative(target.container_id, target.parent)
            net = f"{self.layout.proc}/{target.pid}/net/dev"
            root = str(self.layout.root)
            if self.layout.version == 2:
                base = f"{root}/{rel}"
                files = ContainerFiles(net, f"{base}/memory.stat", f"{base}/memory.current", f"{base}/memory.max",
                                       f"{base}/cpu.stat", f"{base}/io.stat", f"{base}/pids.current")
            else:
                memory = f"{root}/memory/{rel}"
                files = ContainerFiles(
                    net, f"{memory}/memory.stat", f"{memory}/memory.usage_in_bytes", f"{memory}/memory.limit_in_bytes",
                    f"{root}/cpuacct/{rel}/cpuacct.usage", f"{root}/blkio/{rel}/blkio.throttle.io_service_bytes",
                    f"{root}/pids/{rel}/pids.current")
            self._files[target] = files
        return files

    def read(self, target: CgroupTarget) -> Counters:
        """The counters of one container; OSError when its files are gone (it stopped) or unreadable."""
        files = self.files_of(target)
        rx, tx = _net_dev(_text(files.net))
        usage = int(_text(files.usage))
        limit = _limit(_text(files.limit))
        pids = int(_text(files.pids))
        if self.layout.version == 2:
            inactive = _keyed(_text(files.memory_stat), "inactive_file")
            cpu_ns = _keyed(_text(files.cpu), "usage_usec") * 1000
            read, write = _io_stat(files.io)
        else:
            inactive = _keyed(_text(files.memory_stat), "total_inactive_file")
            cpu_ns = int(_text(files.cpu))
            read, write = _blkio(_text(files.io))
        # As Docker: a container without a limit reports the host's memory.
        if limit is None or (self._host_memory and limit > self._host_memory):
            limit = self._host_memory
        return Counters(
            cpu_ns=cpu_ns, at_ns=time.monotonic_ns(), memory_bytes=max(usage - inactive, 0),
            memory_limit_bytes=limit, pids=pids, read_bytes=read, write_bytes=write, rx_bytes=rx, tx_bytes=tx,
        )

    @staticmethod
    def _sample(before: Counters | None, now: Counters) -> StatsSample:
        cpu = 0.0
        # A counter that went back is a new container in the same cgroup (a restart): no rate this round.
        if before is not None and now.at_ns > before.at_ns and now.cpu_ns >= before.cpu_ns:
            cpu = (now.cpu_ns - before.cpu_ns) / (now.at_ns - before.at_ns) * 100.0
        return StatsSample(
            memory_bytes=now.memory_bytes, memory_limit_bytes=now.memory_limit_bytes, cpu_absolute=round(cpu, 3),
            rx_bytes=now.rx_bytes, tx_bytes=now.tx_bytes, pids=now.pids, block_read_bytes=now.read_bytes,
            block_write_bytes=now.write_bytes,
        )


def _text(path: str) -> str:
    """A small kernel file's text: os.open/os.read, no buffered file object (a round opens thousands)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        # A kernel file under a page comes whole in one read; a longer one may come a page at a time.
        while PAGE <= len(data) < MAX_FILE_BYTES and (more := os.read(fd, 65536)):
            data += more
    finally:
        os.close(fd)
    return data.decode("ascii", "replace")


def _limit(text: str) -> int | None:
    text = text.strip()
    if text == "max" or not text:
        return None
    value = int(text)
    return None if value >= V1_MAX else value


def _keyed(text: str, key: str) -> int:
    """The value of `key` in a flat keyed file (`name value` lines); 0 when absent."""
    needle = key + " "
    at = 0 if text.startswith(needle) else text.find("\n" + needle) + 1
    if at == 0 and not text.startswith(needle):
        return 0
    end = text.find("\n", at)
    return int(text[at + len(needle): end if end >= 0 else len(text)])


def _blkio(text: str) -> tuple[int, int]:
    """v1 `blkio.throttle.io_service_bytes`: `<major:minor> Read|Write|... <bytes>` lines."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                write += int(parts[2])
    return read, write


def _io_stat(path: str) -> tuple[int, int]:
    """v2 `io.stat`: `<major:minor> rbytes=N wbytes=N ...` lines (absent when io is not delegated)."""
    read = write = 0
    try:
        text = _text(path)
    except FileNotFoundError:
        return 0, 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            name, _, value = field.partition("=")
            if name == "rbytes" and value.isdigit():
                read += int(value)
            elif name == "wbytes" and value.isdigit():
                write += int(value)
    return read, write


def _net_dev(text: str) -> tuple[int, int]:
    """Bytes received and sent on every interface of the namespace but loopback (as Docker's networks)."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def _host_memory(proc: Path) -> int:
    try:
        for line in _text(proc / "meminfo").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
