"""Outbound HTTP that cannot be aimed at samq's own network (the SSRF guard), for media and webhook URLs.

Every address a URL's host resolves to is judged by ``forbidden_reason``; one forbidden address refuses the URL.
The connection then goes to an address that was judged, never through a second lookup (so DNS rebinding cannot
swap it), and every redirect hop is parsed, resolved, judged and pinned afresh. Operators exempt trusted networks
with ``SAMQ_ALLOW_PRIVATE_URLS`` (``QueueSettings.allowed_networks``).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import TracebackType

from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    MediaTooLargeError,
    SamqError,
    UnresolvableHostError,
    UrlRefusedError,
)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses as text``; raises ``socket.gaierror`` (or answers nothing) for an unknown name."""

USER_AGENT = "samq"
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
POST_RESPONSE_LIMIT = 64 * 1024
"""``post`` reads at most this much of a response body, and throws it away."""
_CHUNK = 64 * 1024
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
class _Target:
    url: str
    https: bool
    host: str
    port: int
    path: str


def _parse(url: str) -> _Target:
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
    return _Target(url, https, parts.hostname, port or (443 if https else 80), path)


def check_url(url: str, allowed: Sequence[Network], resolver: Resolver = system_resolver) -> None:
    """Refuse a URL samq must not fetch from or post to: not http(s), no host, a bad port, credentials, or a host
    with a forbidden address.

    Raises ``UrlRefusedError`` (code ``url_refused``), ``UnresolvableHostError`` (a ``MediaNotFoundError``) when the
    name does not resolve, or ``MediaFetchError`` on a temporary DNS failure. The connection re-checks: passing
    here does not make a later fetch safe by itself.
    """
    target = _parse(url)
    resolve(target.host, target.port, allowed, resolver)


SocketHook = Callable[[socket.socket], None]


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one address that was already checked; the host name is never resolved again.

    The Host header is still the URL's host (and port). ``on_socket`` sees each socket as soon as it exists.
    """

    def __init__(
        self,
        host: str,
        port: int,
        address: Address,
        *,
        connect_timeout: float,
        read_timeout: float,
        on_socket: SocketHook | None = None,
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.address = address
        self.read_timeout = read_timeout
        self.on_socket = on_socket

    def connect(self) -> None:
        sock = self._tcp()
        sock.settimeout(self.read_timeout)
        self.sock = sock

    def _tcp(self) -> socket.socket:
        sock = socket.create_connection((str(self.address), self.port), self.timeout)
        self._seen(sock)
        return sock

    def _seen(self, sock: socket.socket) -> None:
        if self.on_socket is not None:
            self.on_socket(sock)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """``PinnedHTTPConnection`` with TLS; the certificate is verified against the URL's host name, not the address."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self,
        host: str,
        port: int,
        address: Address,
        *,
        connect_timeout: float,
        read_timeout: float,
        on_socket: SocketHook | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            host, port, address, connect_timeout=connect_timeout, read_timeout=read_timeout, on_socket=on_socket
        )
        self.context = context or ssl.create_default_context()

    def connect(self) -> None:
        tls = self.context.wrap_socket(self._tcp(), server_hostname=self.host, do_handshake_on_connect=False)
        self._seen(tls)
        self.sock = tls
        tls.do_handshake()  # under the connect timeout, like the TCP handshake
        tls.settimeout(self.read_timeout)


class _Deadline:
    """A time limit on a whole exchange: once it passes, every socket it watches is shut down, so that a server
    dripping bytes (headers, TLS records, chunk sizes) cannot keep a read going past it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="samq-egress-deadline", daemon=True)

    def __enter__(self) -> _Deadline:
        self._watchdog.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._done.set()
        self._watchdog.join()

    def remaining(self) -> float:
        return self._ends - time.monotonic()

    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.expired:
            self._shut_down()

    def _watch(self) -> None:
        if self._done.wait(max(self.remaining(), 0.0)):
            return
        self.expired = True
        while True:  # a socket made between two checks is caught on the next round
            self._shut_down()
            if self._done.wait(0.05):
                return

    def _shut_down(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # the plain socket call, even for TLS: it only touches the descriptor
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class _Timeouts:
    connect: float
    read: float


@contextmanager
def _exchange(
    target: _Target,
    addresses: Sequence[Address],
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    timeouts: _Timeouts,
    deadline: _Deadline,
) -> Iterator[http.client.HTTPResponse]:
    """Connects to the first of ``addresses`` that answers, sends the request, yields the response (head read)."""
    conn = _connect(target, addresses, timeouts, deadline)
    try:
        conn.request(
            method, target.path, body=body, headers={"User-Agent": USER_AGENT, "Connection": "close", **headers}
        )
        with conn.getresponse() as response:
            if deadline.expired:  # the head may have been cut short by the shut-down socket: don't trust it
                raise TimeoutError(f"no complete response within {deadline.seconds:g}s")
            yield response
    finally:
        conn.close()


def _connect(
    target: _Target, addresses: Sequence[Address], timeouts: _Timeouts, deadline: _Deadline
) -> PinnedHTTPConnection:
    timed_out = _ConnectTimeoutError(f"timeout after {timeouts.connect:g}s while connecting")
    last: OSError = timed_out
    for address in addresses:
        if deadline.passed():
            break
        kind = PinnedHTTPSConnection if target.https else PinnedHTTPConnection
        conn = kind(
            target.host,
            target.port,
            address,
            connect_timeout=min(timeouts.connect, max(deadline.remaining(), 0.001)),
            read_timeout=timeouts.read,
            on_socket=deadline.watch,
        )
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            last = timed_out if isinstance(e, TimeoutError) else e
        else:
            return conn
    raise last


class _ConnectTimeoutError(TimeoutError):
    """Connecting took longer than the connect timeout (told apart from a slow response)."""


def _describe(error: BaseException, timeouts: _Timeouts) -> str:
    """A short, human account of a network failure."""
    if isinstance(error, _ConnectTimeoutError):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"timeout after {timeouts.read:g}s waiting for the server"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP response ({type(error).__name__})"
    if isinstance(error, OSError):
        return f"network error: {error.strerror or error}"
    return repr(error)


def fetch(
    url: str,
    *,
    allowed: Sequence[Network],
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
    total_seconds: float,
    max_redirects: int = MAX_REDIRECTS,
    resolver: Resolver = system_resolver,
) -> bytes:
    """GET ``url`` and return its body, following at most ``max_redirects`` redirects, each hop checked and pinned.

    Raises ``UrlRefusedError`` (forbidden address, not http(s), too many redirects, another 4xx),
    ``MediaNotFoundError`` (404, 410, a name that does not resolve), ``MediaTooLargeError`` (over ``max_bytes``),
    ``MediaFetchError`` (network failure, timeout, 5xx, 429, past ``total_seconds``: transient).
    """
    timeouts = _Timeouts(connect_timeout, read_timeout)
    current = url
    with _Deadline(total_seconds) as deadline:
        for _ in range(max_redirects + 1):
            target = _parse(current)
            addresses = resolve(target.host, target.port, allowed, resolver)
            try:
                with _exchange(target, addresses, "GET", None, {}, timeouts, deadline) as response:
                    if response.status not in REDIRECT_STATUSES:
                        return _body(target, response, max_bytes, deadline)
                    status, location = response.status, response.getheader("Location", "").strip()
            except (OSError, http.client.HTTPException) as e:
                if deadline.passed():
                    raise _too_slow(target.url, total_seconds) from e
                raise MediaFetchError(f"could not fetch {target.url}: {_describe(e, timeouts)}") from e
            if not location:
                raise UrlRefusedError(f"{target.url} answered {status} without a Location")
            current = urllib.parse.urljoin(current, location)
    raise UrlRefusedError(f"{url} redirected more than {max_redirects} times")


def _body(target: _Target, response: http.client.HTTPResponse, max_bytes: int, deadline: _Deadline) -> bytes:
    status = response.status
    if status in (404, 410):
        raise MediaNotFoundError(f"{target.url} answered {status}")
    if status >= 500 or status == 429:
        raise MediaFetchError(f"{target.url} answered {status}")
    if not 200 <= status < 300:
        raise UrlRefusedError(f"{target.url} answered {status}")
    too_large = MediaTooLargeError(f"{target.url} is larger than {max_bytes} bytes (SAMQ_WORKER_MAX_MEDIA_BYTES)")
    length = response.getheader("Content-Length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
        if deadline.passed():
            break
    if deadline.passed():  # also how a shut-down socket looks: an early end of the body
        raise _too_slow(target.url, deadline.seconds)
    if response.length:
        raise MediaFetchError(f"{target.url} closed the connection {response.length} bytes before the body's end")
    return b"".join(chunks)


def _too_slow(url: str, total_seconds: float) -> MediaFetchError:
    return MediaFetchError(f"{url} took longer than {total_seconds:g}s to download (SAMQ_WORKER_FETCH_TOTAL_SECONDS)")


@dataclass(frozen=True)
class PostOutcome:
    """What became of one POST: the status code if one came back, else what went wrong."""

    status: int | None
    error: str | None
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allowed: Sequence[Network],
    connect_timeout: float,
    read_timeout: float,
    total_seconds: float | None = None,
    resolver: Resolver = system_resolver,
) -> PostOutcome:
    """POST ``body`` to ``url`` once, with the same address guard and pinning as ``fetch``; redirects are not
    followed (a 3xx is only a status). Reads at most ``POST_RESPONSE_LIMIT`` bytes of the response and drops them.

    Never raises for refusals or network failures: they come back as ``PostOutcome.error``
    (``"refused: 10.0.0.1 is a private address"``, ``"timeout after 3s while connecting"``, ``"connection refused"``).
    The whole exchange is bounded by ``total_seconds`` (default: connect plus read timeout). Retrying is the caller's.
    """
    started = time.monotonic()

    def outcome(status: int | None, error: str | None) -> PostOutcome:
        return PostOutcome(status, error, (time.monotonic() - started) * 1000)

    timeouts = _Timeouts(connect_timeout, read_timeout)
    total = connect_timeout + read_timeout if total_seconds is None else total_seconds
    try:
        target = _parse(url)
        addresses = resolve(target.host, target.port, allowed, resolver)
    except UrlRefusedError as e:
        return outcome(None, f"refused: {e.message}")
    except SamqError as e:
        return outcome(None, e.message)
    with _Deadline(total) as deadline:
        try:
            with _exchange(target, addresses, "POST", body, headers, timeouts, deadline) as response:
                _drain(response, deadline)
                return outcome(response.status, None)
        except (OSError, http.client.HTTPException) as e:
            if deadline.passed():
                return outcome(None, f"timeout after {total:g}s in all")
            return outcome(None, _describe(e, timeouts))


def _drain(response: http.client.HTTPResponse, deadline: _Deadline) -> None:
    """Reads and drops up to ``POST_RESPONSE_LIMIT`` bytes; the status is already known, so failures don't matter."""
    left = POST_RESPONSE_LIMIT
    with suppress(OSError, http.client.HTTPException):
        while left > 0 and not deadline.passed() and (chunk := response.read1(min(left, _CHUNK))):
            left -= len(chunk)
