"""Which network addresses lightd may connect to on a tenant's behalf (pull from URL), and an aiohttp resolver
that hands the connector only those.

SECURITY: pull SSRF via redirect/DNS (Wings' advisory class). A URL a tenant gives must not reach the node's
own services, the private network, or a cloud metadata endpoint, whatever its host name says. The address is
checked after DNS resolution, and the connection is made to exactly the checked address (the resolver below
filters what the connector may dial), so a name that resolves differently a second time (DNS rebinding)
changes nothing. IP-literal hosts never reach a resolver: `AddressPolicy.check_host` checks them before each
request, the first and every redirect alike.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from lightd import __version__

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    # IPv4
    "0.0.0.0/8",           # "this network", the unspecified address
    "10.0.0.0/8",          # private
    "100.64.0.0/10",       # carrier-grade NAT (Alibaba's metadata endpoint 100.100.100.200 too)
    "127.0.0.0/8",         # loopback
    "169.254.0.0/16",      # link-local, the cloud metadata endpoint 169.254.169.254 among them
    "172.16.0.0/12",       # private
    "192.0.0.0/24",        # IETF protocol assignments
    "192.0.2.0/24",        # documentation
    "192.168.0.0/16",      # private
    "198.18.0.0/15",       # benchmarking
    "198.51.100.0/24",     # documentation
    "203.0.113.0/24",      # documentation
    "224.0.0.0/4",         # multicast
    "240.0.0.0/4",         # reserved, and the broadcast address
    # IPv6
    "::/128",              # unspecified
    "::1/128",             # loopback
    "::/96",               # IPv4-compatible (deprecated)
    "64:ff9b:1::/48",      # local-use NAT64
    "100::/64",            # discard
    "2001:db8::/32",       # documentation
    "fc00::/7",            # unique local, the cloud metadata endpoint fd00:ec2::254 among them
    "fe80::/10",           # link-local
    "fec0::/10",           # site-local (deprecated)
    "ff00::/8",            # multicast
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class AddressRefused(OSError):
    """The destination's address is one lightd does not connect to for a tenant (an OSError so that aiohttp's
    connector passes it through as the cause of its connection error)."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and would reach: IPv4-mapped, NAT64, 6to4, Teredo."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def parse_address(text: str) -> IPAddress | None:
    """The address an IP literal spells (canonical forms only; an IPv6 zone is dropped); None for a name."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class AddressPolicy:
    """Refuses the networks in REFUSED_NETWORKS (and anything Python does not call global), IPv4 and IPv6,
    an IPv4 address inside an IPv6 one judged as that IPv4 address; `allowed` networks (the admin's
    `volumes.pull_allowed_networks`) are admitted even so."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)

    def _admitted(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None when lightd may connect to it."""
        inner = embedded_ipv4(address)
        if self._admitted(address) or (inner is not None and self._admitted(inner)):
            return None
        # SECURITY: ::ffff:127.0.0.1 reaches 127.0.0.1: an address carrying an IPv4 one is judged as that.
        judged = inner if inner is not None else address
        for net in REFUSED_NETWORKS:
            if judged.version == net.version and judged in net:
                return f"{address} is in {net}, which is not reachable from a pull"
        if not judged.is_global or judged.is_multicast:
            return f"{address} is not a public address"
        return None

    def check(self, address: IPAddress) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise AddressRefused(reason)

    def check_host(self, host: str) -> None:
        """Refuse an IP-literal host now (aiohttp connects to a literal without asking the resolver)."""
        address = parse_address(host)
        if address is not None:
            self.check(address)


class GuardedResolver(AbstractResolver):
    """Resolves with `base` and gives the connector only the addresses the policy admits: the connection
    goes to an address that was checked, never to a second answer of the DNS. AddressRefused when none is."""

    def __init__(self, policy: AddressPolicy, base: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.base = base if base is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.base.resolve(host, port, family)
        admitted, reasons = [], []
        for result in results:
            address = parse_address(result["host"])
            reason = "not an IP address" if address is None else self.policy.refusal(address)
            if reason is None:
                admitted.append(result)
            else:
                reasons.append(reason)
        if not admitted:
            raise AddressRefused(f"{host} resolves only to refused addresses ({'; '.join(reasons[:4]) or 'none'})")
        return admitted

    async def close(self) -> None:
        await self.base.close()


class FetchFailed(Exception):
    """The remote server answered something other than a file (an error status, a redirect loop...)."""


def check_url(url: URL, policy: AddressPolicy) -> None:
    """ValueError for a URL lightd does not fetch (another scheme, no host); AddressRefused for a literal
    address the policy refuses."""
    if url.scheme not in SCHEMES:
        raise ValueError(f"only http and https URLs can be pulled, not {url.scheme or 'a relative URL'!r}")
    if not url.host:
        raise ValueError("the URL has no host")
    policy.check_host(url.host)


class GuardedClient:
    """An HTTP client for tenant-given URLs: connections go only to addresses the policy admits (the resolver
    filters names, literals are checked before each request), no proxy from the environment is used, and
    redirects are followed here, at most MAX_REDIRECTS, each new URL checked like the first."""

    def __init__(self, policy: AddressPolicy, *, timeout: aiohttp.ClientTimeout,
                 resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy, resolver), use_dns_cache=False, limit=4)
        # trust_env=False: an HTTP(S)_PROXY variable would make the proxy, not us, choose the address.
        # auto_decompress=False and identity: the bytes written are the bytes counted against the limits.
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False, auto_decompress=False,
            headers={"User-Agent": f"lightd/{__version__}", "Accept-Encoding": "identity"})

    async def get(self, url: URL) -> aiohttp.ClientResponse:
        """The 200 answer for `url` after redirects (the caller releases it); FetchFailed, AddressRefused,
        ValueError or aiohttp's errors otherwise."""
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self.policy)  # SECURITY: pull SSRF via redirect — every hop is checked
            response = await self.session.get(url, allow_redirects=False)
            if response.status in REDIRECTS:
                location = response.headers.get("Location")
                response.release()
                if not location:
                    raise FetchFailed(f"{url.host} answered {response.status} without a Location")
                url = url.join(URL(location))
                continue
            if response.status != 200:
                response.release()
                raise FetchFailed(f"{url.host} answered {response.status} {response.reason or ''}".rstrip())
            return response
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")

    async def close(self) -> None:
        await self.session.close()
