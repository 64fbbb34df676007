"""The SSRF guard: which URLs samq may fetch media from or post webhooks to, for both the API and the workers.

Every address a URL's host resolves to is judged by ``forbidden_reason``; one forbidden address refuses the URL.
``tasks.pinned_http`` then connects only to an address judged here, never through a second lookup (so DNS
rebinding cannot swap it), and judges every redirect hop afresh. Operators exempt trusted networks with
``SAMQ_ALLOW_PRIVATE_URLS`` (``QueueSettings.allowed_networks``).
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from tasks.errors import (
    MediaFetchError,
    UnresolvableHostError,
    UrlRefusedError,
)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses as text``; raises ``socket.gaierror`` (or answers nothing) for an unknown name."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_SAFE = "!$&'()*+,-./:;=?@_~%"

_V4: tuple[tuple[IPv4Network, str], ...] = (
    (IPv4Network("0.0.0.0/32"), "an unspecified address"),
    (IPv4Network("0.0.0.0/8"), "a 'this network' address (0.0.0.0/8)"),
    (IPv4Network("127.0.0.0/8"), "a loopback address"),
    (IPv4Network("10.0.0.0/8"), "a private address"),
    (IPv4Network("172.16.0.0/12"), "a private address"),
    (IPv4Network("192.168.0.0/16"), "a private address"),
    (IPv4Network("100.64.0.0/10"), "a carrier-grade NAT address (100.64.0.0/10)"),
    (IPv4Network("169.254.169.254/32"), "a link-local address (the cloud metadata service)"),
    (IPv4Network("169.254.0.0/16"), "a link-local address"),
    (IPv4Network("192.0.0.0/24"), "an IETF protocol assignment (192.0.0.0/24)"),
    (IPv4Network("192.0.2.0/24"), "a documentation address"),
    (IPv4Network("198.51.100.0/24"), "a documentation address"),
    (IPv4Network("203.0.113.0/24"), "a documentation address"),
    (IPv4Network("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (IPv4Network("198.18.0.0/15"), "a benchmarking address"),
    (IPv4Network("224.0.0.0/4"), "a multicast address"),
    (IPv4Network("255.255.255.255/32"), "the broadcast address"),
    (IPv4Network("240.0.0.0/4"), "a reserved address"),
)
_V6: tuple[tuple[IPv6Network, str], ...] = (
    (IPv6Network("::/128"), "an unspecified address"),
    (IPv6Network("::1/128"), "a loopback address"),
    (IPv6Network("64:ff9b:1::/48"), "a local-use NAT64 address (64:ff9b:1::/48)"),
    (IPv6Network("100::/64"), "a discard-only address"),
    (IPv6Network("2001::/32"), "a Teredo address"),
    (IPv6Network("2001:2::/48"), "a benchmarking address"),
    (IPv6Network("2001::/23"), "an IETF protocol assignment (2001::/23)"),
    (IPv6Network("2001:db8::/32"), "a documentation address"),
    (IPv6Network("3fff::/20"), "a documentation address"),
    (IPv6Network("5f00::/16"), "an SRv6 segment identifier"),
    (IPv6Network("fc00::/7"), "a private (unique local) address"),
    (IPv6Network("fe80::/10"), "a link-local address"),
    (IPv6Network("fec0::/10"), "a site-local address"),
    (IPv6Network("ff00::/8"), "a multicast address"),
)
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_V4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


def forbidden_reason(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why samq must not connect to ``address`` (e.g. ``"127.0.0.1 is a loopback address"``), or None if it may.

    Addresses inside an ``allowed`` network are always fine. IPv6 forms that carry an IPv4 address (IPv4-mapped,
    IPv4-compatible, 6to4, NAT64) are judged by the IPv4 address they carry; Teredo is refused outright.
    """
    label = _label(address, allowed)
    return None if label is None else f"{address} is {label}"


def _label(address: Address, allowed: Sequence[Network]) -> str | None:
    if any(address in network for network in allowed):
        return None
    if isinstance(address, IPv4Address):
        return next((label for network, label in _V4 if address in network), None)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        inner = _label(ipv4, allowed)
        if inner is not None:
            return f"{form} of {ipv4}, which is {inner}"
        if address not in _V4_COMPATIBLE:  # a public IPv4 address in a routable IPv6 form
            return None
    for network, label in _V6:
        if address in network:
            return label
    if address not in _V6_GLOBAL_UNICAST:
        return "a reserved address (outside 2000::/3)"
    return None


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    low32 = IPv4Address(int(address) & 0xFFFF_FFFF)
    if address in _NAT64:
        return "a NAT64 form", low32
    if address in _V4_COMPATIBLE and int(address) > 1:  # not :: or ::1, which have labels of their own
        return "an IPv4-compatible form", low32
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for ``host`` (``getaddrinfo``, TCP), as address text."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve(host: str, port: int, allowed: Sequence[Network], resolver: Resolver = system_resolver) -> list[Address]:
    """Every address ``host`` resolves to, all of them allowed; the connection must then go to one of these.

    Raises ``UrlRefusedError`` if any address is forbidden, ``UnresolvableHostError`` if the name does not
    resolve, ``MediaFetchError`` if the resolver failed temporarily (``EAI_AGAIN``).
    """
    literal = _literal(host)
    addresses = [literal] if literal is not None else _lookup(host, port, resolver)
    for address in addresses:
        reason = forbidden_reason(address, allowed)
        if reason is not None:
            raise UrlRefusedError(reason if literal is not None else f"{host}: {reason}")
    return addresses


def _literal(host: str) -> Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None  # a name, or an IPv4 spelling only getaddrinfo reads (2130706433, 0x7f.1): the resolver's job


def _lookup(host: str, port: int, resolver: Resolver) -> list[Address]:
    try:
        answers = resolver(host, port)
    except socket.gaierror as e:
        if e.errno == socket.EAI_AGAIN:
            raise MediaFetchError(f"cannot resolve {host!r} right now: {e.strerror}") from e
        raise UnresolvableHostError(f"cannot resolve {host!r}") from e
    except UnicodeError as e:
        raise UrlRefusedError(f"{host!r} is not a valid host name") from e
    addresses = list(dict.fromkeys(ip_address(answer) for answer in answers))
    if not addresses:
        raise UnresolvableHostError(f"cannot resolve {host!r}")
    return addresses


@dataclass(frozen=True)
class Target:
    url: str
    https: bool
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    if _CONTROL.search(url):
        raise UrlRefusedError(f"{url!r} contains control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UrlRefusedError(f"{url} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise UrlRefusedError(f"{url} is not an http(s) URL")
    if not parts.hostname:
        raise UrlRefusedError(f"{url} has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefusedError("URLs with credentials (user:password@) are not supported")
    if port == 0:
        raise UrlRefusedError(f"{url} has an invalid port")
    https = parts.scheme == "https"
    path = urllib.parse.quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe=_URL_SAFE)
    return Target(url, https, parts.hostname, port or (443 if https else 80), path)


def check_url(url: str, allowed: Sequence[Network], resolver: Resolver = system_resolver) -> None:
    """Refuse a URL samq must not fetch from or post to: not http(s), no host, a bad port, credentials, or a host
    with a forbidden address.

    Raises ``UrlRefusedError`` (code ``url_refused``), ``UnresolvableHostError`` (a ``MediaNotFoundError``) when the
    name does not resolve, or ``MediaFetchError`` on a temporary DNS failure. The connection re-checks: passing
    here does not make a later fetch safe by itself.
    """
    target = parse_url(url)
    resolve(target.host, target.port, allowed, resolver)
