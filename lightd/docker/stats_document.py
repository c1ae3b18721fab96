"""Docker stats documents -> StatsSample (the numbers `docker stats` shows)."""

from __future__ import annotations

from typing import Any

from lightd.servers.environment import StatsSample


def sample_from_stats(doc: dict[str, Any]) -> StatsSample:
    memory = doc.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    details = memory.get("stats") or {}
    # As `docker stats`: usage minus the inactive file cache (cgroup v1 and v2 names).
    cache = details.get("total_inactive_file", details.get("inactive_file", 0)) or 0
    memory_bytes = max(usage - int(cache), 0)
    cpu = doc.get("cpu_stats") or {}
    precpu = doc.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage") or 0) - (precpu.get("cpu_usage", {}).get("total_usage") or 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (precpu.get("system_cpu_usage") or 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    cpu_absolute = (cpu_delta / system_delta) * cpus * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
    rx = tx = 0
    for network in (doc.get("networks") or {}).values():
        rx += int(network.get("rx_bytes") or 0)
        tx += int(network.get("tx_bytes") or 0)
    return StatsSample(
        memory_bytes=memory_bytes,
        memory_limit_bytes=int(memory.get("limit") or 0),
        cpu_absolute=round(cpu_absolute, 3),
        rx_bytes=rx,
        tx_bytes=tx,
    )
