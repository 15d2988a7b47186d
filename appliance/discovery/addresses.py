"""Which of the host's addresses to announce, read from its interfaces with ifaddr (zeroconf's own helper)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ifaddr


@dataclass(frozen=True, order=True)
class HostAddress:
    interface: str
    """Interface name, e.g. 'eth0'."""
    index: int
    """Interface index; IPv6 multicast joins by index."""
    address: str
    """IPv4 or IPv6 address without a scope suffix."""

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def host_addresses(adapters: Iterable[ifaddr.Adapter] | None = None) -> list[HostAddress]:
    """Every address on every interface, as ifaddr reports them now."""
    found = []
    for adapter in ifaddr.get_adapters() if adapters is None else adapters:
        for ip in adapter.ips:
            # ifaddr gives IPv6 as (address, flowinfo, scope_id)
            address = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            found.append(HostAddress(adapter.name, adapter.index or 0, address.partition("%")[0]))
    return found


def select_addresses(
    available: Iterable[HostAddress], wanted: Sequence[str] | None, ipv6: bool
) -> tuple[HostAddress, ...]:
    """The addresses to announce, sorted so two polls of an unchanged host compare equal.

    `wanted` lists interface names ('eth0') or addresses ('192.168.1.20'); None means every interface but
    loopback. A loopback address or interface counts only when named. IPv6 counts only when `ipv6` is true
    or an IPv6 address is named."""
    chosen = set()
    for host in available:
        if wanted is None:
            picked = not host.is_loopback
        else:
            picked = host.interface in wanted or any(_same_address(host.address, w) for w in wanted)
        named_address = wanted is not None and any(_same_address(host.address, w) for w in wanted)
        if picked and (not host.is_ipv6 or ipv6 or named_address):
            chosen.add(host)
    return tuple(sorted(chosen))


def zeroconf_interfaces(addresses: Iterable[HostAddress]) -> list[str | int]:
    """What zeroconf binds to: one IPv4 address per interface (a second join of the group on the same
    link fails) and, for IPv6, the interface index (IPV6_JOIN_GROUP wants one). All addresses are still
    announced; this only picks the sockets."""
    bind: list[str | int] = []
    links_bound: set[tuple[int, bool]] = set()
    for host in addresses:
        link = (host.index, host.is_ipv6)
        if link not in links_bound:
            links_bound.add(link)
            bind.append(host.index if host.is_ipv6 else host.address)
    return bind


def _same_address(address: str, wanted: str) -> bool:
    try:
        return ipaddress.ip_address(address) == ipaddress.ip_address(wanted.partition("%")[0])
    except ValueError:  # an interface name
        return False
