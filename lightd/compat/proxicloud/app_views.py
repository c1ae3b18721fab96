"""The ProxiCloud web app's read shapes (`frontend/lib/types.ts`), built from the doc flavour's one
`Container` builder (views.py), its template catalogue and analytics samples: Proxmox-style container
objects (`cpu` a fraction, bytes everywhere), the dashboard sums, `vztmpl` template items, the one storage
lightd has, and metrics points and summaries."""

from __future__ import annotations

import re
from typing import Any

from lightd.compat.proxicloud.templates import FEATURED, TemplateCatalogue
from lightd.compat.proxicloud.views import Container, HostFigures
from lightd.timestamps import rfc3339

STORAGE = "local"
"""The one storage lightd has (its volumes directory), named as Proxmox names its directory storage."""
STORAGE_CONTENT = "images,rootdir,vztmpl"
METRICS_BUCKET_SECONDS = 30
"""The collector's interval: one point per sample (older history is hourly, one point per hour)."""
MAX_HOURS = 30 * 24
_SIMPLE_ID = re.compile(r"^[A-Za-z0-9.-]+$")
_TIMEFRAME = re.compile(r"^([0-9]{1,4})([hd])$")


def container(c: Container, node_name: str, project_id: str | None) -> dict[str, Any]:
    """A `Container`: Proxmox's figures (cpu as a fraction of the container's cores, bytes, seconds)."""
    item: dict[str, Any] = {
        "vmid": c.vmid, "name": c.name, "status": c.status, "node": node_name, "cpu": round(c.cpu_usage / 100, 4),
        "mem": c.memory_usage, "maxmem": c.memory_total, "disk": c.disk_usage, "maxdisk": c.disk_total,
        "uptime": c.uptime, "template": c.template,
    }
    distribution = next((f[3] for f in FEATURED if f[0] == c.template), None)
    optional = {"os": distribution, "project_id": project_id, "ip_address": c.ip_address}
    item.update({k: v for k, v in optional.items() if v})  # omitempty, as the Go backend encodes them
    return item


def dashboard(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`DashboardStats`: the real backend's sums over its container list."""
    running = sum(1 for i in items if i["status"] == "running")
    return {
        "total_containers": len(items), "running_containers": running, "stopped_containers": len(items) - running,
        "total_cpu": round(sum(i["cpu"] for i in items), 4),
        "total_memory": sum(i["maxmem"] for i in items), "used_memory": sum(i["mem"] for i in items),
        "total_disk": sum(i["maxdisk"] for i in items), "used_disk": sum(i["disk"] for i in items),
    }


def template_volid(entry: dict[str, Any]) -> str:
    """A Proxmox `vztmpl` volume id for a template id that fits in one (`template_id` maps it back); any
    other (a local image's `repo/name:tag`) is its own volid, which `ostemplate` accepts as it is."""
    template = entry["id"]
    if _SIMPLE_ID.match(template):
        return f"{STORAGE}:vztmpl/{template}_{entry['version']}_amd64.tar.zst"
    return template


async def templates(catalogue: TemplateCatalogue) -> list[dict[str, Any]]:
    """`Template[]`: what a create can use now (as Proxmox lists the templates it has downloaded)."""
    return [{"volid": template_volid(e), "format": "tzst", "size": e["size"], "content": "vztmpl"}
            for e in await catalogue.all() if e["available"]]


def storage(host: HostFigures) -> dict[str, Any]:
    """`Storage`: lightd's volumes directory and its filesystem."""
    total, used = host.storage_total, host.storage_used
    return {"storage": STORAGE, "type": "dir", "content": STORAGE_CONTENT, "active": True, "enabled": True,
            "avail": max(total - used, 0), "total": total, "used": used,
            "used_fraction": round(used / total, 4) if total else 0.0, "shared": False}


def storage_matches(query: Any, node_name: str) -> bool:
    """The real backend's `GET /api/storage` filters, over the one storage."""
    content, name, target = query.get("content"), query.get("storage"), query.get("target")
    if content and content not in STORAGE_CONTENT.split(","):
        return False
    return (not name or name == STORAGE) and (not target or target == node_name)


def hours_of(query: Any) -> int:
    """`?hours=` (the backend's) or `?timeframe=24h|7d` (what the frontend sends); as the real backend,
    anything else means the default, 24."""
    raw = query.get("hours", "")
    if raw.isascii() and raw.isdigit() and 0 < int(raw):
        return min(int(raw), MAX_HOURS)
    match = _TIMEFRAME.match(query.get("timeframe", ""))
    if match and int(match[1]) > 0:
        return min(int(match[1]) * (24 if match[2] == "d" else 1), MAX_HOURS)
    return 24


def metrics(vmid: int, rows: list[dict[str, Any]], disk_total: int, limit: int) -> list[dict[str, Any]]:
    """`MetricsData[]`, newest first, at most `limit`: what the frontend reads (`timestamp` in ms, `cpu`
    and `memory` in percent) and the real backend's field names beside them. Block I/O is not collected."""
    points = []
    for r in reversed(rows[-limit:] if limit else []):
        memory_total = int(r["memory_total"] or 0)
        percent = round(100.0 * r["memory"] / memory_total, 2) if memory_total else 0.0
        points.append({
            "vmid": vmid, "timestamp": int(r["ts"] * 1000), "cpu": round(r["cpu"], 2), "memory": percent,
            "disk_read": 0, "disk_write": 0, "net_in": int(r["net_in"]), "net_out": int(r["net_out"]),
            "cpu_usage": round(r["cpu"], 2), "mem_usage": int(r["memory"]), "mem_total": memory_total,
            "disk_usage": int(r["disk"]), "disk_total": disk_total,
        })
    return points


def metrics_summary(vmid: int, rows: list[dict[str, Any]], disk_total: int, since: float, now: float) -> dict[str, Any]:
    """`MetricsSummary` over the window (zeros with `data_points: 0` when nothing was sampled in it)."""
    samples = sum(int(r["samples"]) for r in rows)

    def average(values: list[float]) -> float:
        weights = [int(r["samples"]) for r in rows]
        return round(sum(v * w for v, w in zip(values, weights, strict=True)) / samples, 2) if samples else 0.0

    memory = [100.0 * r["memory"] / r["memory_total"] if r["memory_total"] else 0.0 for r in rows]
    disk = [100.0 * r["disk"] / disk_total if disk_total else 0.0 for r in rows]
    return {
        "vmid": vmid,
        "start_time": rfc3339(rows[0]["ts"] if rows else since), "end_time": rfc3339(rows[-1]["ts"] if rows else now),
        "avg_cpu": average([r["cpu"] for r in rows]), "max_cpu": round(max((r["cpu_max"] for r in rows), default=0.0), 2),
        "avg_mem_usage": average(memory), "max_mem_usage": int(max((r["memory"] for r in rows), default=0)),
        "avg_disk_usage": average(disk),
        "total_net_in": int(sum(r["net_in"] for r in rows)), "total_net_out": int(sum(r["net_out"] for r in rows)),
        "data_points": samples,
    }
