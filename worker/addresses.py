"""Which IP addresses videoq never connects to, or lets a caller point the upstream at.

:func:`blocked_reason` judges one address (the URL policy, :mod:`worker.urls`, and the
connect-time guard use it): loopback, private, link-local, multicast, shared (CGNAT),
unspecified, broadcast, reserved and documentation addresses, and anything else that
is not global, in every IPv6 form that carries an IPv4 address. With
``VIDEOQ_ALLOW_PRIVATE_URLS``, :func:`private_allowed_reason` lets loopback and private
addresses through, never the ones in :func:`never_allowed`. Pure and cheap: no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# (network, reason), most specific first. IANA's special-purpose registries, the parts
# that are not globally reachable; anything else that ipaddress does not call global is
# refused too (a fallback, as its tables differ between Python versions).
_IPV4_BLOCKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/32"), "an unspecified address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("0.0.0.0/8"), "a 'this network' address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("100.64.0.0/10"), "a shared (CGNAT) address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
    (_V4("192.0.0.0/24"), "an IETF protocol address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("192.88.99.0/24"), "a 6to4 relay address"),
)
_IPV6_BLOCKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("fc00::/7"), "a private (unique local) address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001::/32"), "a Teredo address"),
    (_V6("2001::/23"), "an IETF protocol address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("5f00::/16"), "a segment-routing address"),
    (_V6("::/8"), "a reserved address"),
)
_MAPPED = _V6("::ffff:0:0/96")
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_NAT64_LOCAL = _V6("64:ff9b:1::/48")
_SIXTOFOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")
_LOW32 = 0xFFFFFFFF


def _ipv4_reason(address: ipaddress.IPv4Address) -> str | None:
    for network, reason in _IPV4_BLOCKS:
        if address in network:
            return reason
    return None if address.is_global else "a non-global address"


def _embedded_ipv4(
    address: ipaddress.IPv6Address,
) -> tuple[list[ipaddress.IPv4Address], str, bool] | None:
    """The IPv4 addresses an IPv6 address carries, the form's name, and whether the form
    reaches exactly them (so that a public one makes the whole address public)."""
    if address in _MAPPED:
        return [ipaddress.IPv4Address(int(address) & _LOW32)], "an IPv4-mapped address", True
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & _LOW32)], "a NAT64 address", True
    if address in _NAT64_LOCAL:
        return [ipaddress.IPv4Address(int(address) & _LOW32)], "a local-use NAT64 address", False
    if address in _COMPATIBLE and int(address) > 1:
        return [ipaddress.IPv4Address(int(address) & _LOW32)], "an IPv4-compatible address", True
    if address in _SIXTOFOUR and address.sixtofour is not None:
        return [address.sixtofour], "a 6to4 address", True
    if address in _TEREDO and address.teredo is not None:
        server, client = address.teredo
        return [client, server], "a Teredo address", False
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why a connection to ``address`` must be refused, or None if it is public.

    Refuses loopback, private (RFC 1918, unique local), link-local, multicast, shared
    (CGNAT 100.64.0.0/10), unspecified, broadcast, reserved and documentation addresses,
    and anything else that is not global. IPv6 forms that carry an IPv4 address
    (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by that address, so
    ``::ffff:127.0.0.1`` is a loopback address. Pure and cheap: no I/O.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_reason(address)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner, form, exact = embedded
        for v4 in inner:
            reason = _ipv4_reason(v4)
            if reason is not None:
                return f"{reason} ({v4}) inside {form}"
        if exact:
            return None
    for network, reason in _IPV6_BLOCKS:
        if address in network:
            return reason
    return None if address.is_global else "a non-global address"


def never_allowed(address: IPAddress) -> bool:
    """Addresses refused even with ``allow_private``: nothing to fetch from or post to
    (unspecified, multicast, broadcast), and link-local (the cloud metadata service),
    in any IPv6 form that carries one of them."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates += embedded[0]
    return any(
        a.is_unspecified
        or a.is_multicast
        or a.is_link_local
        or a == ipaddress.IPv4Address("255.255.255.255")
        for a in candidates
    )


def private_allowed_reason(address: IPAddress) -> str | None:
    """:func:`blocked_reason` for ``VIDEOQ_ALLOW_PRIVATE_URLS``: loopback and private
    addresses pass; the ones refused even then (link-local, unspecified, multicast,
    broadcast, in any form) do not."""
    if never_allowed(address):
        return blocked_reason(address) or "not an address to connect to"
    return None
