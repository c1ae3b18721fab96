"""The reverse proxy: upstreams and routes (persisted in the store), its config and statistics, and the data
plane under `/proxy/...` of this front end.

A request to `<front end>/proxy/<path>` is matched against the routes (`path` exact, or a prefix ending in
`*`; `method` or ANY; the most specific wins) and forwarded, as `/<path>`, to one server of the route's
upstream (round_robin by weight, random or least_conn). What may be reached is narrow on purpose:
- SECURITY: an upstream server is an IP literal on loopback (127.0.0.0/8, ::1) with a port — anything
  else is refused (400) when the upstream is written; host names are refused (no DNS tricks);
- SECURITY: at forward time the address must be a port of lightd's port pool held by a container, i.e. a
  container's published port; anything else on loopback (lightd's own API, other daemons) is never
  contacted (the server counts as down, 502 when no server is left);
- SECURITY: nor is one of the daemon's own listening ports, even if the pool lists it as held (the pool
  refuses them, but a row may predate that);
- SECURITY: `Authorization`, `X-API-Key` and `Cookie` are not forwarded (they carry lightd's token).
Passive health: a server that failed `max_fails` times is skipped for `fail_timeout`. Active health checks,
`middleware` and WebSocket upgrades are not implemented (the settings are stored and shown).
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from lightd.compat.base import CompatServices
from lightd.compat.container_codes.models import parse_duration
from lightd.compat.container_codes.proxy_models import ProxyConfig, Route, Upstream, UpstreamServer, loopback_address
from lightd.compat.container_codes.store import ContainerCodesStore
from lightd.errors import LightdError, NotFound, PayloadTooLarge, ServiceUnavailable

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "x-api-key", "cookie"}
SAMPLES = 1024
"""Response times kept for the percentiles (the newest)."""
RATE_WINDOW = 60.0
SETTING = "proxy_config"


class ServerState:
    def __init__(self) -> None:
        self.requests = 0
        self.active = 0
        self.fails = 0
        self.down_until = 0.0
        self.total_ms = 0.0


class ProxyService:
    """Routing, forwarding and statistics; one per daemon (shared by the mounted and own-port apps)."""

    def __init__(self, services: CompatServices, store: ContainerCodesStore) -> None:
        self.services = services
        self.store = store
        self.session: aiohttp.ClientSession | None = None
        self._rotation: dict[str, int] = {}
        self._servers: dict[tuple[str, str], ServerState] = {}
        self._upstream_totals: dict[str, int] = {}
        self._times: deque[float] = deque(maxlen=SAMPLES)
        self._recent: deque[float] = deque()
        self.total = 0
        self.errors = 0

    async def start(self) -> None:
        """Open the forwarding session (the front end's lifetime: after the daemon's services start)."""
        # No cookie jar, no environment proxies: each request stands alone, straight to loopback.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                             auto_decompress=False)

    async def close(self) -> None:
        """Close the forwarding session."""
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()

    # -- configuration -------------------------------------------------------------------------------
    async def config(self) -> ProxyConfig:
        stored = await self.store.get_setting(SETTING)
        return ProxyConfig.model_validate(stored or {})

    async def upstreams(self) -> list[Upstream]:
        return [Upstream.model_validate(u) for u in await self.store.list_proxy_items("upstreams")]

    async def upstream(self, name: str) -> Upstream:
        for upstream in await self.upstreams():
            if upstream.name == name:
                return upstream
        raise NotFound(f"upstream {name!r} not found", details={"upstream": name})

    async def routes(self) -> list[Route]:
        return [Route.model_validate(r) for r in await self.store.list_proxy_items("routes")]

    async def route(self, route_id: str) -> Route:
        for route in await self.routes():
            if route.id == route_id:
                return route
        raise NotFound(f"route {route_id!r} not found", details={"route_id": route_id})

    # -- forwarding ----------------------------------------------------------------------------------
    async def _published(self) -> set[tuple[str, int]]:
        """Loopback pool ports a container holds: the only addresses the proxy contacts."""
        pool = self.services.ports
        # SECURITY: proxy to the daemon's own listeners (the native API with its routes): never, whatever
        # the pool says.
        return {(p["ip"], p["port"]) for p in await pool.list(protocol="tcp", in_use=True)
                if p["container"] and ipaddress.ip_address(p["ip"]).is_loopback and p["port"] not in pool.own_ports}

    async def candidates(self, upstream: Upstream) -> list[UpstreamServer]:
        published = await self._published()
        now = time.monotonic()
        usable = []
        for server in upstream.servers:
            ip, port = loopback_address(server.address)
            state = self._state(upstream.name, server.address)
            if (ip, port) in published and state.down_until <= now:
                usable.append(server)
        if not usable:
            return []
        if upstream.strategy == "random":
            return random.sample(usable, len(usable))
        if upstream.strategy == "least_conn":
            return sorted(usable, key=lambda s: self._state(upstream.name, s.address).active)
        # round_robin: each server `weight` times in the ring; the next in turn first, the rest as fallbacks.
        ring = [s for s in usable for _ in range(s.weight)]
        start = self._rotation.get(upstream.name, 0) % len(ring)
        self._rotation[upstream.name] = start + 1
        ordered: list[UpstreamServer] = []
        for server in ring[start:] + ring[:start]:
            if all(server.address != s.address for s in ordered):
                ordered.append(server)
        return ordered

    def _state(self, upstream: str, address: str) -> ServerState:
        return self._servers.setdefault((upstream, address), ServerState())

    def record(self, upstream: str | None, address: str | None, status: int, elapsed_ms: float, failed: bool) -> None:
        now = time.monotonic()
        self.total += 1
        self.errors += 1 if failed or status >= 500 else 0
        self._times.append(elapsed_ms)
        self._recent.append(now)
        while self._recent and self._recent[0] < now - RATE_WINDOW:
            self._recent.popleft()
        if upstream is not None:
            self._upstream_totals[upstream] = self._upstream_totals.get(upstream, 0) + 1
        if upstream is not None and address is not None:
            state = self._state(upstream, address)
            state.requests += 1
            state.total_ms += elapsed_ms

    def fail(self, upstream: Upstream, server: UpstreamServer) -> None:
        state = self._state(upstream.name, server.address)
        state.fails += 1
        if server.max_fails and state.fails >= server.max_fails:
            state.down_until = time.monotonic() + parse_duration(server.fail_timeout)
            state.fails = 0

    async def stats(self) -> dict[str, Any]:
        times = sorted(self._times)

        def pct(q: float) -> float:
            return round(times[min(len(times) - 1, int(q * len(times)))], 2) if times else 0.0

        now = time.monotonic()
        upstreams: dict[str, Any] = {}
        for upstream in await self.upstreams():
            servers = []
            active = 0
            for server in upstream.servers:
                state = self._state(upstream.name, server.address)
                active += state.active
                servers.append({
                    "address": server.address, "status": "unhealthy" if state.down_until > now else "healthy",
                    "requests": state.requests,
                    "response_time": round(state.total_ms / state.requests, 2) if state.requests else 0.0,
                })
            upstreams[upstream.name] = {"total_requests": self._upstream_totals.get(upstream.name, 0),
                                        "active_connections": active, "servers": servers}
        window = [t for t in self._recent if t >= now - RATE_WINDOW]
        return {
            "requests_total": self.total,
            "requests_per_second": round(len(window) / RATE_WINDOW, 3),
            "response_times": {"avg": round(sum(times) / len(times), 2) if times else 0.0,
                               "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
            "error_rate": round(self.errors / self.total, 4) if self.total else 0.0,
            "upstreams": upstreams,
        }

    async def forward(self, request: web.Request, path: str) -> web.StreamResponse:
        started = time.monotonic()
        config = await self.config()
        if not config.enabled:
            raise ServiceUnavailable("the reverse proxy is disabled (PUT /api/proxy/config)")
        method = request.method.upper()
        matching = [r for r in await self.routes() if r.matches(method, path)]
        if not matching:
            self.record(None, None, 404, 0.0, False)
            raise NotFound(f"no proxy route matches {method} {path}", details={"path": path})
        route = max(matching, key=Route.specificity)
        upstream = await self.upstream(route.upstream)
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            raise PayloadTooLarge(f"request body is larger than the proxy limit of {config.max_body_bytes} bytes")
        body = await request.read()
        if len(body) > config.max_body_bytes:
            raise PayloadTooLarge(f"request body is larger than the proxy limit of {config.max_body_bytes} bytes")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        headers.update({name: self._expand(value, request) for name, value in route.headers.items()})
        headers.setdefault("X-Forwarded-For", request.remote or "")
        timeout = aiohttp.ClientTimeout(total=parse_duration(route.timeout))
        assert self.session is not None
        last_error = "no healthy upstream server (only containers' published loopback ports are used)"
        for server in (await self.candidates(upstream))[: route.retries + 1]:
            state = self._state(upstream.name, server.address)
            ip, port = loopback_address(server.address)
            url = URL.build(scheme="http", host=ip, port=port, path=path)
            state.active += 1
            response: web.StreamResponse | None = None
            try:
                async with self.session.request(method, url, params=request.query, data=body, headers=headers,
                                                timeout=timeout, allow_redirects=False) as upstream_response:
                    response = web.StreamResponse(status=upstream_response.status, headers={
                        k: v for k, v in upstream_response.headers.items() if k.lower() not in HOP_BY_HOP})
                    await response.prepare(request)
                    async for chunk in upstream_response.content.iter_chunked(64 * 1024):
                        await response.write(chunk)
                    await response.write_eof()
                    state.fails = 0
                    self.record(upstream.name, server.address, upstream_response.status,
                                (time.monotonic() - started) * 1000, False)
                    return response
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.fail(upstream, server)
                if response is not None:
                    # The answer had begun: no other server can take over; the client sees a cut body.
                    self.record(upstream.name, server.address, 502, (time.monotonic() - started) * 1000, True)
                    return response
                last_error = f"{server.address}: {type(exc).__name__}"
            finally:
                state.active -= 1
        self.record(upstream.name, None, 502, (time.monotonic() - started) * 1000, True)
        raise BadGateway(last_error, details={"upstream": upstream.name})

    @staticmethod
    def _expand(value: str, request: web.Request) -> str:
        return value.replace("$remote_addr", request.remote or "").replace("$host", request.host)


class BadGateway(LightdError):
    status = 502
    code = "bad_gateway"


PROXY = web.AppKey("container_codes_proxy", ProxyService)
