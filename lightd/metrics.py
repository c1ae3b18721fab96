"""NodeMetrics: what `GET /metrics` exposes, in one CollectorRegistry per application (nothing global).

The HTTP latency histogram is observed by a middleware, labelled by the route's canonical path (its pattern,
`/containers/{container_id}`), never the raw path: the label set is bounded by the route table. Everything
else is read from the services at scrape time by one collector (no per-event bookkeeping): per-server
figures from each server's latest stats sample and the sampler's last disk figure, console lines and
throttle drops, the event bus's overflow drops, the outbox, the engine's availability."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lightd import keys
from lightd.servers.models import RuntimeState
from lightd.servers.state import ACTIVE_STATES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMATCHED = "(unmatched)"
"""The route label of requests no route matched (404, 405): one label, whatever the path."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format `generate_latest` writes, which every Prometheus version scrapes."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class NodeMetrics:
    """The registry of one application: the HTTP histogram and the node's collector."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_latency = Histogram(
            "lightd_http_request_duration_seconds", "Time to answer an HTTP request, by route pattern.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.outbox: dict[str, int] = {"depth": 0, "dropped": 0}
        self.registry.register(NodeCollector(app, self))

    async def refresh(self, app: web.Application) -> None:
        """Read what only an await gives (the outbox's rows in SQLite) before a scrape."""
        if keys.SYNC in app:
            status = await app[keys.SYNC].status()
            self.outbox = {"depth": status["queue_depth"], "dropped": status["dropped"]}

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    """The route's canonical path (`/containers/{container_id}`); UNMATCHED when no route matched."""
    info = request.match_info
    route = info.route if info.http_exception is None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observes every request's handling time (errors included) in the app's `http_latency` histogram."""
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        metrics = request.config_dict.get(keys.METRICS)
        if metrics is not None:
            metrics.http_latency.labels(request.method, route_label(request)).observe(time.perf_counter() - started)


class NodeCollector(Collector):
    """Reads the services of `app` at scrape time (a service not started yet is skipped)."""

    def __init__(self, app: web.Application, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        app = self.app
        if keys.SERVERS in app:
            yield from self._servers(app)
            yield GaugeMetricFamily("lightd_engine_up", "1 when the container engine answers (its event stream is up).",
                                    value=1 if app[keys.SERVERS].engine_up else 0)
        if keys.STATS in app:
            source = app[keys.STATS].source()
            family = GaugeMetricFamily("lightd_stats_source", "Where container stats come from (the label).",
                                       labels=["source"])
            family.add_metric([source["source"]], 1)
            yield family
            yield GaugeMetricFamily("lightd_stats_stream_fallbacks", "Running servers sampled from the engine's "
                                    "stats stream because their cgroup files cannot be read.",
                                    value=source["stream_fallbacks"])
        if keys.EVENTS in app:
            yield CounterMetricFamily("lightd_event_bus_dropped", "Lines and events dropped by full subscriber "
                                      "queues (slow consumers).", value=app[keys.EVENTS].dropped_total)
        if keys.SYNC in app:
            sync = app[keys.SYNC]
            yield GaugeMetricFamily("lightd_outbox_depth", "Panel updates waiting in the outbox.",
                                    value=self.metrics.outbox["depth"])
            yield GaugeMetricFamily("lightd_outbox_dropped", "Panel updates dropped (refused by the panel or over "
                                    "the outbox bound), kept for inspection.", value=self.metrics.outbox["dropped"])
            yield CounterMetricFamily("lightd_remote_failures", "Failed deliveries to the panel and failed health "
                                      "checks (each retried, or dropped when refused).", value=sync.delivery_failures)
        if keys.TIMERS in app:
            yield GaugeMetricFamily("lightd_timers_pending", "Timers on the timer wheel.", value=len(app[keys.TIMERS]))
        if keys.TASKS in app:
            yield GaugeMetricFamily("lightd_owned_tasks", "Background tasks held by the daemon's task owner.",
                                    value=len(app[keys.TASKS]))
        try:  # every task on the loop (request handlers included): flat over time when nothing leaks (bench/soak.py)
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # collected outside the loop (no running loop): nothing to count
            return
        yield GaugeMetricFamily("lightd_asyncio_tasks", "Tasks on the event loop.", value=tasks)

    def _servers(self, app: web.Application) -> Iterator[Metric]:
        servers = list(app[keys.SERVERS])
        disk = app[keys.STATS].disk_bytes if keys.STATS in app else {}

        def family(kind: type, name: str, doc: str, *extra: str) -> Any:
            return kind(name, doc, labels=["server", *extra])

        cpu = family(GaugeMetricFamily, "lightd_server_cpu_percent", "CPU as `docker stats`: percent of one core.")
        memory = family(GaugeMetricFamily, "lightd_server_memory_bytes", "Memory used (less the inactive file cache).")
        limit = family(GaugeMetricFamily, "lightd_server_memory_limit_bytes", "Memory limit (the host's when none).")
        rx = family(CounterMetricFamily, "lightd_server_network_receive_bytes", "Bytes received by the container.")
        tx = family(CounterMetricFamily, "lightd_server_network_transmit_bytes", "Bytes sent by the container.")
        disk_used = family(GaugeMetricFamily, "lightd_server_disk_bytes", "Bytes the server's volume uses (cached).")
        state = family(GaugeMetricFamily, "lightd_server_state", "1 for the server's runtime state.", "state")
        lines = family(CounterMetricFamily, "lightd_server_console_lines", "Console lines read from the server.")
        dropped = family(CounterMetricFamily, "lightd_server_console_dropped_lines",
                         "Console lines dropped by the output throttle.")
        states = get_args(RuntimeState)
        for server in servers:
            sid = [server.id]
            sample = server.latest_stats if server.state in ACTIVE_STATES else None
            if sample is not None:
                cpu.add_metric(sid, sample.cpu_absolute)
                memory.add_metric(sid, sample.memory_bytes)
                limit.add_metric(sid, sample.memory_limit_bytes)
                rx.add_metric(sid, sample.rx_bytes)
                tx.add_metric(sid, sample.tx_bytes)
            if server.id in disk:
                disk_used.add_metric(sid, disk[server.id])
            for name in states:
                state.add_metric([server.id, name], 1 if server.state == name else 0)
            lines.add_metric(sid, server.throttle.lines_total)
            dropped.add_metric(sid, server.throttle.dropped_total)
        yield GaugeMetricFamily("lightd_servers", "Servers on this node.", value=len(servers))
        yield from (cpu, memory, limit, rx, tx, disk_used, state, lines, dropped)
