"""Backup throughput: a local zstd backup of a 1 GiB volume of 10,000 files through the real daemon
(`POST /containers/{id}/backups` until the console socket's `backup_completed`), against `tar --zstd -cf` of the same tree in
the same run (target: ≥ 0.8× tar's throughput), and the daemon's peak RSS while it runs (target < 150 MB).

The tree: files of ~105 KiB, each half random bytes and half repeated text (compresses about 2:1). Runs
alternate tar and lightd, the page cache warm for both (a first tar run reads the tree in, untimed); the
best of each is compared. `--quick`: 100 MiB in 1,000 files, one round.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time

import aiohttp
import psutil

import common

TEXT = b"[12:00:00] [Server thread/INFO]: Player joined the game; saving chunks for region r.0.0\n"


def make_tree(root, files: int, total: int) -> int:
    size = total // files
    written = 0
    for i in range(files):
        folder = root / f"world/region{i // 250:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        half = size // 2
        data = os.urandom(half) + (TEXT * (half // len(TEXT) + 1))[: size - half]
        (folder / f"chunk{i:05d}.dat").write_bytes(data)
        written += len(data)
    return written


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tar_run(root, out, cpus: list[float] | None = None) -> float:
    cpu = children_cpu()
    began = time.perf_counter()
    subprocess.run(["tar", "--zstd", "-cf", str(out), "-C", str(root), "."], check=True)
    elapsed = time.perf_counter() - began
    if cpus is not None:
        cpus.append(children_cpu() - cpu)  # tar and the zstd it runs
    return elapsed


async def lightd_run(api: common.Api, session: aiohttp.ClientSession, daemon: common.Daemon) -> tuple[float, int, float]:
    """(seconds, archive bytes, peak RSS in MB) of one backup; its end is the `backup_completed` event on the
    console socket (no polling: requests to the daemon would compete with the backup for its GIL)."""
    proc = psutil.Process(daemon.pid)
    peak = proc.memory_info().rss
    async with session.ws_connect(f"{daemon.url}/ws/bk?token={daemon.token}") as ws:
        began = time.perf_counter()
        status, body = await api.call("POST", "/containers/bk/backups", json={})
        assert status == 202, body
        while True:
            try:
                message = await ws.receive_json(timeout=0.05)
            except asyncio.TimeoutError:
                peak = max(peak, proc.memory_info().rss)
                continue
            data = message.get("data") if message.get("event") == "event" else None
            if isinstance(data, dict) and data.get("type") in ("backup_completed", "backup_failed"):
                break
        elapsed = time.perf_counter() - began
    assert data["type"] == "backup_completed", data
    peak = max(peak, proc.memory_info().rss)
    await api.call("DELETE", f"/containers/bk/backups/{body['backup_id']}")
    return elapsed, data["size"], peak / 1e6


async def main(bench: common.Bench) -> None:
    args = common.parse_args(__doc__)
    files, total, rounds = (1_000, 100 * 2**20, 1) if args.quick else (10_000, 2**30, 2)
    daemon = bench.daemon()
    await common.seed_store(daemon, [("bk", "sleep 100")])
    volume = next((daemon.data_dir / "volumes").iterdir())
    common.note(f"writing {files} files, {total / 2**20:.0f} MiB")
    size = make_tree(volume, files, total)
    out = bench.tmp / "baseline.tar.zst"
    tar_run(volume, out)  # reads the tree into the page cache (untimed)
    await daemon.start()
    async with aiohttp.ClientSession(headers=daemon.headers) as session:
        api = common.Api(session, daemon)
        tar_times, lightd_times, peaks, sizes, tar_cpus, lightd_cpus = [], [], [], [], [], []
        proc = psutil.Process(daemon.pid)
        for i in range(rounds):
            tar_times.append(tar_run(volume, out, tar_cpus))
            common.note(f"round {i + 1}: tar {tar_times[-1]:.2f} s (CPU {tar_cpus[-1]:.2f} s), "
                        f"{out.stat().st_size / 2**20:.0f} MiB; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            cpu = sum(proc.cpu_times()[:2])
            seconds, archive, peak = await lightd_run(api, session, daemon)
            lightd_cpus.append(sum(proc.cpu_times()[:2]) - cpu)
            lightd_times.append(seconds)
            peaks.append(peak)
            sizes.append(archive)
            common.note(f"round {i + 1}: lightd {seconds:.2f} s (CPU {lightd_cpus[-1]:.2f} s), {archive / 2**20:.0f} MiB, "
                        f"peak RSS {peak:.0f} MB")
    best_tar, best_lightd = min(tar_times), min(lightd_times)
    ratio = best_tar / best_lightd
    common.report("backup_zstd", f"{files} files {size / 2**20:.0f} MiB: lightd {size / best_lightd / 2**20:.0f} MiB/s "
                  f"({best_lightd:.2f} s, archive {sizes[0] / 2**20:.0f} MiB) vs tar --zstd {size / best_tar / 2**20:.0f} MiB/s "
                  f"({best_tar:.2f} s, archive {out.stat().st_size / 2**20:.0f} MiB): ratio {ratio:.2f} (target >= 0.8) "
                  f"{common.verdict(ratio >= 0.8)}; CPU seconds (min): lightd {min(lightd_cpus):.2f}, tar + zstd {min(tar_cpus):.2f}")
    common.report("backup_rss", f"daemon peak RSS {max(peaks):.0f} MB (target < 150 MB) {common.verdict(max(peaks) < 150)}")


if __name__ == "__main__":
    common.run("backup", main)
