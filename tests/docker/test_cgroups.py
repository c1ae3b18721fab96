"""Container stats from cgroup files: v1 and v2 parsed from file trees the tests write (the layouts Docker
makes with either driver), the fallback to the engine's stream when files cannot be read, and both sources
compared on real containers (one burning CPU, one holding memory): within 5% of Docker's own stats."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lightd.docker.cgroup_stats import CgroupStats
from lightd.docker.cgroups import CgroupReader, CgroupTarget, Counters, detect_layout
from lightd.docker.client import DockerClient
from lightd.docker.stats_document import sample_from_stats

CID = "f" * 64
PID = 4242
HOST_MEMORY = 8 * 1024 ** 3
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     999       9    0    0    0     0          0         0      999       9    0    0    0     0       0          0
  eth0:    1200      12    0    0    0     0          0         0      340       4    0    0    0     0       0          0
  eth1:      30       1    0    0    0     0          0         0       60       1    0    0    0     0       0          0
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_proc(proc: Path) -> None:
    write(proc / "meminfo", f"MemTotal:       {HOST_MEMORY // 1024} kB\nMemFree:  1 kB\n")
    write(proc / str(PID) / "net" / "dev", NET_DEV)


def v1_tree(root: Path, proc: Path, cpu_ns: int = 5_000_000_000, limit: str = "268435456") -> Path:
    """What Docker's cgroupfs driver makes on a v1 host (`/docker/<id>` in every hierarchy)."""
    rel = f"docker/{CID}"
    write(root / "memory" / rel / "memory.usage_in_bytes", "104857600\n")
    write(root / "memory" / rel / "memory.limit_in_bytes", limit + "\n")
    write(root / "memory" / rel / "memory.stat", "cache 8388608\ninactive_file 1\ntotal_inactive_file 4194304\n")
    write(root / "cpuacct" / rel / "cpuacct.usage", f"{cpu_ns}\n")
    write(root / "pids" / rel / "pids.current", "7\n")
    write(root / "blkio" / rel / "blkio.throttle.io_service_bytes",
          "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 1000\n8:16 Write 24\nTotal 13312\n")
    write_proc(proc)
    return root


def v2_tree(root: Path, proc: Path, usage_usec: int = 3_000_000, memory_max: str = "max") -> Path:
    """What Docker's systemd driver makes on a v2 host (`system.slice/docker-<id>.scope`)."""
    base = root / "system.slice" / f"docker-{CID}.scope"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(base / "memory.current", "52428800\n")
    write(base / "memory.max", memory_max + "\n")
    write(base / "memory.stat", "anon 40000000\nfile 12000000\ninactive_file 2097152\n")
    write(base / "cpu.stat", f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    write(base / "pids.current", "3\n")
    write(base / "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n254:1 rbytes=5 wbytes=6\n")
    write_proc(proc)
    return root


def test_v1_files_read_as_docker_reports_them(tmp_path):
    root, proc = v1_tree(tmp_path / "cg", tmp_path / "proc"), tmp_path / "proc"
    (root / "cpuacct").mkdir(exist_ok=True)
    layout = detect_layout("cgroupfs", 1, root, proc)
    assert layout is not None and layout.version == 1 and layout.source == "cgroup_v1"
    counters = CgroupReader(layout).read(CgroupTarget(CID, "", PID))
    assert counters.memory_bytes == 104857600 - 4194304  # usage less the inactive file cache, as `docker stats`
    assert counters.memory_limit_bytes == 268435456
    assert counters.cpu_ns == 5_000_000_000 and counters.pids == 7
    assert (counters.read_bytes, counters.write_bytes) == (5096, 8216)
    assert (counters.rx_bytes, counters.tx_bytes) == (1230, 400)  # every interface but lo


def test_v1_no_limit_is_the_host_memory_and_a_custom_parent(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc"
    v1_tree(root, proc, limit="9223372036854771712")
    for controller in ("memory", "cpuacct", "pids", "blkio"):
        (root / controller / "docker").rename(root / controller / "games")
    layout = detect_layout("cgroupfs", "1", root, proc)
    assert layout is not None
    counters = CgroupReader(layout).read(CgroupTarget(CID, "/games", PID))
    assert counters.memory_limit_bytes == HOST_MEMORY


def test_v2_files_read_as_docker_reports_them(tmp_path):
    root, proc = v2_tree(tmp_path / "cg", tmp_path / "proc"), tmp_path / "proc"
    layout = detect_layout("systemd", 2, root, proc)
    assert layout is not None and layout.version == 2 and layout.source == "cgroup_v2"
    counters = CgroupReader(layout).read(CgroupTarget(CID, "", PID))
    assert counters.memory_bytes == 52428800 - 2097152
    assert counters.memory_limit_bytes == HOST_MEMORY  # "max"
    assert counters.cpu_ns == 3_000_000_000 and counters.pids == 3
    assert (counters.read_bytes, counters.write_bytes) == (105, 206)
    assert (counters.rx_bytes, counters.tx_bytes) == (1230, 400)


def test_v2_limit_and_nested_slice(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc"
    v2_tree(root, proc, memory_max="134217728")
    nested = root / "games.slice" / "games-eu.slice"
    nested.mkdir(parents=True)
    (root / "system.slice" / f"docker-{CID}.scope").rename(nested / f"docker-{CID}.scope")
    layout = detect_layout("systemd", 2, root, proc)
    counters = CgroupReader(layout).read(CgroupTarget(CID, "games-eu.slice", PID))
    assert counters.memory_limit_bytes == 134217728


def test_layout_refused_when_files_do_not_match(tmp_path):
    v1 = v1_tree(tmp_path / "v1", tmp_path / "proc")
    v2 = v2_tree(tmp_path / "v2", tmp_path / "proc")
    assert detect_layout("cgroupfs", 2, v1) is None  # the engine says v2, the host mounts v1
    assert detect_layout("cgroupfs", 1, v2) is None
    assert detect_layout("none", 2, v2) is None  # an unknown driver: where cgroups are is unknown
    assert detect_layout("systemd", None, v2).version == 2  # an old engine that does not say: the mount decides


def test_cpu_percent_of_two_readings():
    def counters(cpu_ns: int, at_ns: int) -> Counters:
        return Counters(cpu_ns, at_ns, 1, 2, 3, 4, 5, 6, 7)

    assert CgroupReader._sample(None, counters(10, 10)).cpu_absolute == 0.0
    # 1.5 s of CPU in 1 s of wall time: 150 % (as `docker stats`: summed over cores)
    sample = CgroupReader._sample(counters(0, 0), counters(1_500_000_000, 1_000_000_000))
    assert sample.cpu_absolute == 150.0
    assert (sample.memory_bytes, sample.memory_limit_bytes, sample.pids) == (1, 2, 3)
    assert (sample.block_read_bytes, sample.block_write_bytes, sample.rx_bytes, sample.tx_bytes) == (4, 5, 6, 7)
    assert CgroupReader._sample(counters(900, 0), counters(100, 10)).cpu_absolute == 0.0  # a restart


class RecordedEngine:
    """The two engine calls CgroupStats makes, answered from a recorded layout."""

    def __init__(self, driver: str, version: str) -> None:
        self.info_doc = {"CgroupDriver": driver, "CgroupVersion": version}
        self.running: dict[str, int] = {}
        self.inspects = 0

    async def info(self) -> dict[str, Any]:
        return self.info_doc

    async def inspect_container(self, name: str) -> dict[str, Any] | None:
        self.inspects += 1
        pid = self.running.get(name)
        state = {"Running": pid is not None, "Pid": pid or 0}
        return {"Id": CID, "State": state, "HostConfig": {"CgroupParent": ""}}


async def test_batch_rounds_and_the_fallback_to_the_stream(tmp_path):
    root, proc = v2_tree(tmp_path / "cg", tmp_path / "proc"), tmp_path / "proc"
    engine = RecordedEngine("systemd", "2")
    stats = CgroupStats(engine, lambda i: f"p-{i}", root=root, proc=proc)  # type: ignore[arg-type]
    assert stats.source() == "detecting"  # the engine not asked yet: no guess
    assert await stats.sample(["a"]) == {"a": None}  # not running: no sample, no fallback
    assert stats.source() == "cgroup_v2"
    engine.running["p-a"] = PID
    first = (await stats.sample(["a"]))["a"]
    assert first is not None and first.memory_bytes == 52428800 - 2097152 and first.cpu_absolute == 0.0
    write(root / "system.slice" / f"docker-{CID}.scope" / "cpu.stat", "usage_usec 3500000\n")
    second = (await stats.sample(["a"]))["a"]
    assert second is not None and second.cpu_absolute > 0
    assert engine.inspects == 2  # one for "not running", one when it ran: then cached
    # Files that cannot be read (a runtime lightd does not know): after fresh inspects keep failing, the
    # container is left out of the result — the sampler then streams it from the engine.
    (root / "system.slice" / f"docker-{CID}.scope" / "memory.current").unlink()
    assert await stats.sample(["a"]) == {"a": None}
    assert await stats.sample(["a"]) == {}
    assert await stats.sample(["a"]) == {}
    assert await stats.sample([]) == {}  # the server went down: forgotten
    assert stats._targets == {} and stats._unreadable == set()


async def test_a_restart_is_not_a_failure_to_read(tmp_path):
    """The engine still reports an ended process as running (a restart under way on a busy node): reads that
    fail because that process is gone never move the container to the engine's stream (bench/soak.py saw
    servers restarted every minute end up, one by one, with a stream and a task each for good)."""
    root, proc = v1_tree(tmp_path / "cg", tmp_path / "proc"), tmp_path / "proc"
    engine = RecordedEngine("cgroupfs", "1")
    stats = CgroupStats(engine, lambda i: f"p-{i}", root=root, proc=proc)  # type: ignore[arg-type]
    engine.running["p-a"] = PID + 1  # no /proc/<pid>: the process has ended
    for _ in range(4):
        assert await stats.sample(["a"]) == {"a": None}
    assert stats._unreadable == set() and stats._failures == {}
    engine.running["p-a"] = PID  # the new process
    sample = (await stats.sample(["a"]))["a"]
    assert sample is not None and sample.memory_bytes > 0


async def test_a_round_of_many_containers_is_read_in_parts_spread_over_the_time_given(tmp_path, monkeypatch):
    """500 servers are some 3,500 file reads a round: in parts of READ_CHUNK with pauses between, so that no
    burst takes a core from the event loop (GET /containers' p99 at 500 running, issue 17)."""
    from lightd.docker import cgroup_stats

    root, proc = v1_tree(tmp_path / "cg", tmp_path / "proc"), tmp_path / "proc"
    engine = RecordedEngine("cgroupfs", "1")
    stats = CgroupStats(engine, lambda i: f"p-{i}", root=root, proc=proc)  # type: ignore[arg-type]
    ids = [f"s{n}" for n in range(100)]
    for i in ids:
        engine.running[f"p-{i}"] = PID
    parts: list[tuple[float, int]] = []
    real = CgroupStats._read_round

    def recording(reader: CgroupReader, reading: dict[str, CgroupTarget]) -> Any:
        parts.append((time.monotonic(), len(reading)))
        return real(reader, reading)

    monkeypatch.setattr(cgroup_stats.CgroupStats, "_read_round", staticmethod(recording))
    samples = await stats.sample(ids, spread=0.4)
    assert sorted(samples) == sorted(ids) and all(s is not None and s.memory_bytes > 0 for s in samples.values())
    chunk = cgroup_stats.READ_CHUNK
    assert [n for _, n in parts] == [chunk, chunk, chunk, 100 - 3 * chunk]
    gaps = [b[0] - a[0] for a, b in zip(parts, parts[1:])]
    assert all(gap >= 0.09 for gap in gaps), gaps  # 0.4 s over 4 parts
    # no spread asked (or few containers): one part, no pause
    parts.clear()
    assert len(await stats.sample(ids)) == 100 and [n for _, n in parts] == [chunk, chunk, chunk, 100 - 3 * chunk]
    parts.clear()
    assert len(await stats.sample(ids[:5], spread=0.4)) == 5 and [n for _, n in parts] == [5]


async def test_docker_mode_and_unusable_hosts_read_nothing(tmp_path):
    engine = RecordedEngine("cgroupfs", "1")
    assert await CgroupStats(engine, str, mode="docker").sample(["a"]) == {}  # type: ignore[arg-type]
    stats = CgroupStats(engine, str, root=tmp_path)  # type: ignore[arg-type]
    assert await stats.sample(["a"]) == {} and stats.source() == "docker_stats"


# -- the real engine ----------------------------------------------------------------------------------
BURN = ["sh", "-c", "while :; do :; done"]
HOLD = ["awk", 'BEGIN { s = sprintf("%67108864s", "x"); while (1) system("sleep 5") }']


def run_container(prefix: str, name: str, cmd: list[str]) -> None:
    subprocess.run(["docker", "run", "-d", "--name", prefix + name, "--label", f"lightd.prefix={prefix}",
                    "--memory", "512m", "lightd-test/busybox:latest", *cmd], check=True, capture_output=True)


async def compare_sources(client: DockerClient, stats: CgroupStats, name: str, docs: int = 4) -> tuple[list, list]:
    """Docker's samples and ours over the same window: ours read as each of Docker's documents arrives."""
    ours, docker = [], []
    async with asyncio.timeout(30):
        async for doc in client.stats_stream(name):
            if doc.get("read", "").startswith("0001") or not doc.get("precpu_stats", {}).get("system_cpu_usage"):
                continue
            ours.append((await stats.sample([name]))[name])
            docker.append(sample_from_stats(doc))
            if len(docker) > docs:
                break
    return docker[1:], ours[1:]  # ours from its second reading: the first has no rate


def within(ours: float, theirs: float, tolerance: float = 0.05) -> bool:
    return abs(ours - theirs) <= tolerance * max(abs(theirs), 1e-9)


@pytest.mark.docker
async def test_same_values_as_dockers_stats(container_prefix):
    run_container(container_prefix, "burn", BURN)
    run_container(container_prefix, "hold", HOLD)
    client = DockerClient("unix:///var/run/docker.sock")
    stats = CgroupStats(client, lambda i: i)
    try:
        await asyncio.sleep(2)  # the allocation is made
        docker, ours = await compare_sources(client, stats, container_prefix + "burn")
        docker_cpu = sum(s.cpu_absolute for s in docker) / len(docker)
        our_cpu = sum(s.cpu_absolute for s in ours if s) / len(ours)
        assert docker_cpu > 30, docker  # it burns
        assert within(our_cpu, docker_cpu), (our_cpu, docker_cpu)
        assert ours[-1].memory_limit_bytes == docker[-1].memory_limit_bytes == 512 * 1024 * 1024

        docker, ours = await compare_sources(client, stats, container_prefix + "hold", docs=2)
        assert docker[-1].memory_bytes > 64 * 1024 * 1024, docker
        assert within(ours[-1].memory_bytes, docker[-1].memory_bytes), (ours[-1], docker[-1])
        assert ours[-1].memory_limit_bytes == docker[-1].memory_limit_bytes
        assert ours[-1].rx_bytes == docker[-1].rx_bytes and ours[-1].tx_bytes == docker[-1].tx_bytes
        assert ours[-1].pids >= 1
        assert stats.source() == ("cgroup_v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "cgroup_v1")
    finally:
        await client.close()


@pytest.mark.docker
async def test_a_batch_of_many_containers_reads_in_one_thread(container_prefix):
    for i in range(5):
        run_container(container_prefix, f"many{i}", ["sleep", "600"])
    client = DockerClient("unix:///var/run/docker.sock")
    stats = CgroupStats(client, lambda i: container_prefix + i)
    try:
        ids = [f"many{i}" for i in range(5)] + ["absent"]
        started = time.monotonic()
        first = await stats.sample(ids)
        assert first["absent"] is None and all(first[f"many{i}"] is not None for i in range(5))
        second = await stats.sample(ids)
        assert all(second[f"many{i}"].memory_bytes > 0 for i in range(5))
        assert time.monotonic() - started < 5
    finally:
        await client.close()
