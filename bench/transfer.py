"""Server transfer throughput: moving a 1 GiB volume of 10,000 files between two real daemons on this machine
(`POST /containers/{id}/transfer` on the source until its console socket's `transfer_completed`: stop,
offer, tar + zstd stream with its sha256, extraction and checks on the target, server created there, the
source's copy deleted), against `tar -cf - . | zstd -3 -c | curl --data-binary @-` of the same tree into a
plain receiver writing the body to disk (bench/transfer_baseline.py) in the same run. Target: >= 0.7x the
baseline's throughput (volume bytes per second).

The tree is backup.py's (files half random, half repeated text). The two daemons have their own data_dir,
port and container prefix; rounds move the server there and back, each after a baseline run of the tree
where it then is (page cache warm for both: a first, untimed tar reads it in). The baseline's receiver only
writes what it gets; lightd's target also decompresses, checks and extracts every file (the same two cores
serve both daemons). The streaming form `curl -T -` is shown too, for reference, and a like-for-like
baseline: the same pipeline into a receiver that unpacks the stream (`zstd -d | tar -x`), as a target must.
CPU seconds of each side (both daemons; the pipeline and its receiver) are printed: on 2 cores they bound the
throughput when the machine is busy. Every timed run starts after a `sync` (the previous run's dirty pages
would otherwise be written back during it). `--quick`: 100 MiB in 1,000 files, one move.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

import common
from backup import make_tree
from file_transfer import _wait_baseline


def cpu_seconds(proc: psutil.Process) -> float:
    """The process's CPU and that of the children it has waited for (the extracting receiver's zstd and tar)."""
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline_run(root: Path, url: str, streaming: bool, receiver: psutil.Process | None = None) -> tuple[float, float]:
    """Seconds of `tar | zstd | curl` of `root` into the receiver, and the CPU seconds of the pipeline and
    the receiver."""
    send = ["curl", "-sS", "-f", "-T", "-", url] if streaming else ["curl", "-sS", "-f", "-X", "PUT", "--data-binary", "@-", url]
    os.sync()  # the last run's dirty pages are written back before this one, not during it
    cpu = children_cpu() + (cpu_seconds(receiver) if receiver else 0)
    began = time.perf_counter()
    subprocess.run(f"tar -C '{root}' -cf - . | zstd -3 -q -c | {' '.join(send)} > /dev/null", shell=True, check=True)
    elapsed = time.perf_counter() - began
    return elapsed, children_cpu() + (cpu_seconds(receiver) if receiver else 0) - cpu


async def move(source: common.Daemon, target: common.Daemon, session: aiohttp.ClientSession) -> tuple[float, int]:
    """(seconds, compressed bytes) of one transfer of `mv` from `source` to `target`."""
    status, minted = await common.Api(session, target).call("POST", "/auth/tokens", json={"purpose": "transfer"})
    assert status == 201, minted
    async with session.ws_connect(f"{source.url}/ws/mv?token={source.token}") as ws:
        os.sync()  # as before each baseline run
        began = time.perf_counter()
        status, body = await common.Api(session, source).call(
            "POST", "/containers/mv/transfer", json={"target_url": target.url, "target_token": minted["token"]})
        assert status == 202, body
        while True:
            message = await ws.receive_json(timeout=600)
            data = message.get("data") if message.get("event") == "event" else None
            if isinstance(data, dict) and data.get("type") in ("transfer_completed", "transfer_failed"):
                break
        elapsed = time.perf_counter() - began
    assert data["type"] == "transfer_completed", data
    return elapsed, data["bytes"]


async def main(bench: common.Bench) -> None:
    args = common.parse_args(__doc__, lambda parser: parser.add_argument(
        "--zstd-level", type=int, default=3, help="the daemons' transfers.zstd_level (the baseline stays zstd -3)"))
    files, total, rounds = (1_000, 100 * 2**20, 1) if args.quick else (10_000, 2**30, 2)
    settings = {"transfers": {"min_free_bytes": 0, "zstd_level": args.zstd_level}}
    nodes = [bench.daemon(settings, tag="source"),
             bench.daemon({**settings, "docker": {"container_prefix": bench.prefix + "t-"}}, tag="target")]
    await common.seed_store(nodes[0], [("mv", "sleep 100")])
    volume = next((nodes[0].data_dir / "volumes").iterdir())
    common.note(f"writing {files} files, {total / 2**20:.0f} MiB")
    size = make_tree(volume, files, total)
    received = bench.tmp / "received"
    received.mkdir()
    port = common.free_port()
    receiver = psutil.Process(bench.spawn([sys.executable, str(Path(__file__).with_name("transfer_baseline.py")), str(port),
                                           str(received)]).pid)
    base = f"http://127.0.0.1:{port}"
    await _wait_baseline(base)
    for node in nodes:
        await node.start()
    baseline_run(volume, base + "/upload/warm", streaming=False)  # reads the tree into the page cache (untimed)
    times: dict[str, list[float]] = {"lightd": [], "curl --data-binary": [], "curl -T": [], "extracting": []}
    cpus: dict[str, list[float]] = {"lightd": [], "curl --data-binary": [], "extracting": []}
    procs = [psutil.Process(node.pid) for node in nodes]
    async with aiohttp.ClientSession(headers=nodes[0].headers) as session:
        for i in range(rounds):
            source, target = nodes[i % 2], nodes[(i + 1) % 2]
            here = source.data_dir / "volumes" / volume.name
            seconds, cpu = baseline_run(here, base + "/upload/binary", streaming=False, receiver=receiver)
            times["curl --data-binary"].append(seconds)
            cpus["curl --data-binary"].append(cpu)
            times["curl -T"].append(baseline_run(here, base + "/upload/streamed", streaming=True)[0])
            sent = (received / "binary").stat().st_size
            cpu = sum(cpu_seconds(proc) for proc in procs)
            seconds, moved = await move(source, target, session)
            times["lightd"].append(seconds)
            cpus["lightd"].append(sum(cpu_seconds(proc) for proc in procs) - cpu)
            # after the move: the unpacked tree it leaves (and its removal) weighs on the runs after it
            here = target.data_dir / "volumes" / volume.name
            unpacked, cpu = baseline_run(here, base + "/extract/tree", streaming=False, receiver=receiver)
            times["extracting"].append(unpacked)
            cpus["extracting"].append(cpu)
            shutil.rmtree(received / "tree")
            common.note(f"round {i + 1} ({source.name} -> {target.name}): lightd {seconds:.2f} s ({moved / 2**20:.0f} MiB "
                        f"sent), tar|zstd|curl --data-binary {times['curl --data-binary'][-1]:.2f} s ({sent / 2**20:.0f} "
                        f"MiB), curl -T {times['curl -T'][-1]:.2f} s, into an extracting receiver {times['extracting'][-1]:.2f} s; CPU seconds: lightd (both daemons) "
                        f"{cpus['lightd'][-1]:.2f}, tar|zstd|curl + receiver {cpus['curl --data-binary'][-1]:.2f}, + extracting "
                        f"receiver {cpus['extracting'][-1]:.2f}; "
                        f"load {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    best = {name: min(values) for name, values in times.items()}
    rate = {name: size / seconds / 2**20 for name, seconds in best.items()}
    ratio = best["curl --data-binary"] / best["lightd"]
    common.report("transfer", f"{files} files {size / 2**20:.0f} MiB: lightd {rate['lightd']:.0f} MiB/s ({best['lightd']:.2f} s) "
                  f"vs tar|zstd|curl --data-binary {rate['curl --data-binary']:.0f} MiB/s ({best['curl --data-binary']:.2f} s): "
                  f"ratio {ratio:.2f} (target >= 0.7) {common.verdict(ratio >= 0.7)}; streaming curl -T "
                  f"{rate['curl -T']:.0f} MiB/s (ratio {best['curl -T'] / best['lightd']:.2f}); CPU seconds per move "
                  f"(min): lightd {min(cpus['lightd']):.2f} vs baseline {min(cpus['curl --data-binary']):.2f}")
    like = best["extracting"] / best["lightd"]
    common.report("transfer like-for-like", f"against the same pipeline into a receiver that unpacks it (`zstd -d | tar -x`, "
                  f"as a lightd target unpacks the volume) {rate['extracting']:.0f} MiB/s ({best['extracting']:.2f} s): ratio "
                  f"{like:.2f}; CPU seconds (min) lightd {min(cpus['lightd']):.2f} vs {min(cpus['extracting']):.2f}")


if __name__ == "__main__":
    common.run("transfer", main)
