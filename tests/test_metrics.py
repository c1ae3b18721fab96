"""GET /metrics, scraped and parsed with prometheus_client's own parser: per-server CPU, memory, network, disk,
state, console lines and throttle drops; the outbox and delivery failures; HTTP latency per route pattern
(never the raw path); the engine's availability; the node token or metrics.token; one registry per app."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lightd.app import create_app
from tests.conftest import Api, wait_for
from tests.servers.helpers import create_server, wait_state

SCRAPE_TOKEN = "lightd_scrape_only_token_0123456789"


async def scrape(client: Any, token: str) -> dict[str, list[Any]]:
    """Every sample of GET /metrics by metric family name (no vendor Accept header, as Prometheus)."""
    async with client.get("/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for sample in (s for samples in families.values() for s in samples):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


async def test_metrics_of_a_running_node(aiohttp_client, make_config, container_prefix, node_token, panel):
    panel.mode = "down"  # updates stay in the outbox and deliveries fail
    config = make_config(docker={"container_prefix": container_prefix}, remote=panel.remote(),
                         metrics={"token": SCRAPE_TOKEN}, console={"throttle_lines": 20, "stats_interval_seconds": 0.5})
    client = await aiohttp_client(create_app(config))
    api = Api(client, {"Authorization": f"Bearer {node_token}", "Accept": "application/vnd.pkglatv1+json"})
    await create_server(api, "m1", startup_command="seq 1 500; while true; do : ; done")
    await create_server(api, "m2")
    await api.post("/containers/m1/start")
    await wait_state(api, "m1", "running")
    await api.get("/containers/m2")
    await api.get("/no/such/route/m2-secret")

    async def sampled() -> dict[str, list[Any]] | None:
        families = await scrape(client, SCRAPE_TOKEN)
        cpu = value(families, "lightd_server_cpu_percent", server="m1")
        return families if cpu and cpu > 10 and value(families, "lightd_outbox_depth") else None

    families = await wait_for(sampled, timeout=30, interval=0.5)
    assert value(families, "lightd_server_memory_bytes", server="m1") > 0
    assert value(families, "lightd_server_memory_limit_bytes", server="m1") > 0
    assert value(families, "lightd_server_network_receive_bytes_total", server="m1") is not None
    assert value(families, "lightd_server_network_transmit_bytes_total", server="m1") is not None
    assert value(families, "lightd_server_disk_bytes", server="m1") is not None
    assert value(families, "lightd_server_state", server="m1", state="running") == 1
    assert value(families, "lightd_server_state", server="m1", state="offline") == 0
    assert value(families, "lightd_server_state", server="m2", state="offline") == 1
    assert value(families, "lightd_server_cpu_percent", server="m2") is None  # not running: no sample
    assert value(families, "lightd_server_console_lines_total", server="m1") >= 500
    assert value(families, "lightd_server_console_dropped_lines_total", server="m1") > 0  # 500 lines, 20 per window
    assert value(families, "lightd_servers") == 2
    assert value(families, "lightd_engine_up") == 1
    assert value(families, "lightd_outbox_depth") >= 1
    assert value(families, "lightd_remote_failures_total") >= 1
    assert value(families, "lightd_event_bus_dropped_total") is not None
    assert value(families, "lightd_stats_stream_fallbacks") == 0
    assert value(families, "lightd_timers_pending") >= 1
    assert value(families, "lightd_owned_tasks") >= 1  # at least the timer wheel's and m1's console reader
    assert value(families, "lightd_asyncio_tasks") >= 2  # those, and this request's handler

    routes = {s.labels["route"] for s in families["lightd_http_request_duration_seconds"]}
    assert "/containers/{container_id}" in routes and "(unmatched)" in routes
    assert not [r for r in routes if "m2" in r]  # the pattern, never the raw path: bounded labels
    count = value(families, "lightd_http_request_duration_seconds_count", method="GET",
                  route="/containers/{container_id}")
    assert count is not None and count >= 1
    await api.post("/containers/m1/kill")
    await wait_state(api, "m1", "offline")


async def test_metrics_tokens_and_one_registry_per_app(aiohttp_client, make_config, node_token):
    first = await aiohttp_client(create_app(make_config(metrics={"token": SCRAPE_TOKEN})))
    second = await aiohttp_client(create_app(make_config()))
    for _ in range(3):
        await first.get("/api/v1/public/ping")
    assert await scrape(first, node_token)  # the node token works too, without the vendor Accept header
    families = await scrape(first, SCRAPE_TOKEN)
    assert value(families, "lightd_http_request_duration_seconds_count", method="GET", route="/api/v1/public/ping") == 3
    other = await scrape(second, node_token)
    assert value(other, "lightd_http_request_duration_seconds_count", method="GET", route="/api/v1/public/ping") is None
    for headers in ({}, {"Authorization": f"Bearer {SCRAPE_TOKEN}x"}, {"Authorization": f"Bearer {SCRAPE_TOKEN}"}):
        async with second.get("/metrics", headers=headers) as resp:  # second has no metrics.token
            assert resp.status == 401
    disabled = await aiohttp_client(create_app(make_config(metrics={"enabled": False})))
    async with disabled.get("/metrics", headers={"Authorization": f"Bearer {node_token}"}) as resp:
        assert resp.status == 404
