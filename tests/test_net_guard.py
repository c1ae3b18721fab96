"""The pull address policy and the resolver that filters what the connector may dial (no network used)."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from lightd.net_guard import AddressPolicy, AddressRefused, GuardedResolver, parse_address

REFUSED = [
    "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.100.100.200",
    "169.254.169.254", "169.254.0.1", "0.0.0.0", "224.0.0.251", "239.1.1.1", "255.255.255.255", "240.0.0.1",
    "198.18.0.1", "192.0.0.8", "::1", "::", "fd00:ec2::254", "fc00::1", "fe80::1", "ff02::1", "fec0::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::a00:1",
    "64:ff9b:1::1", "2002:7f00:1::", "2001:db8::1", "fe80::1%eth0",
]
ADMITTED = ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("text", REFUSED)
def test_refused_addresses(text):
    address = parse_address(text)
    assert address is not None
    assert AddressPolicy().refusal(address) is not None
    with pytest.raises(AddressRefused):
        AddressPolicy().check_host(text)


@pytest.mark.parametrize("text", ADMITTED)
def test_public_addresses(text):
    AddressPolicy().check_host(text)


def test_allow_list_admits_only_its_networks():
    policy = AddressPolicy(["127.0.0.2/32", "10.20.0.0/16", "fd12::/16"])
    for text in ("127.0.0.2", "::ffff:127.0.0.2", "10.20.3.4", "fd12::5"):
        policy.check_host(text)
    for text in ("127.0.0.1", "10.21.0.1", "169.254.169.254", "fd00:ec2::254"):
        with pytest.raises(AddressRefused):
            policy.check_host(text)


def test_names_are_left_to_the_resolver():
    AddressPolicy().check_host("localhost")  # checked after resolution, by GuardedResolver
    assert parse_address("localhost") is None and parse_address("2130706433") is None


class FixedResolver(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_resolver_hands_over_admitted_addresses_only():
    resolver = GuardedResolver(AddressPolicy(), FixedResolver(["127.0.0.1", "93.184.216.34", "::1", "2606:4700::1"]))
    results = await resolver.resolve("example.test", 80)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700::1"]


async def test_resolver_refuses_a_name_with_only_refused_addresses():
    resolver = GuardedResolver(AddressPolicy(), FixedResolver(["127.0.0.1", "::ffff:169.254.169.254", "not-an-ip"]))
    with pytest.raises(AddressRefused, match="rebind.test resolves only to refused addresses"):
        await resolver.resolve("rebind.test", 80)


async def test_resolver_with_the_real_dns_refuses_localhost():
    with pytest.raises(AddressRefused):
        await GuardedResolver(AddressPolicy()).resolve("localhost", 80)
