"""Outbound HTTP pinned to addresses the SSRF guard (``tasks.egress``) judged: media downloads and webhook POSTs.

Each hop of a request is parsed, resolved and judged by ``tasks.egress``, then connected to one of the judged
addresses without a second lookup; redirects (media only) are followed the same way. Every exchange runs under a
deadline that shuts its sockets, so a server dripping bytes cannot hold a worker.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType

from tasks.egress import Address, Network, Resolver, Target, parse_url, resolve, system_resolver
from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    MediaTooLargeError,
    SamqError,
    UrlRefusedError,
)

USER_AGENT = "samq"
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
POST_RESPONSE_LIMIT = 64 * 1024
"""``post`` reads at most this much of a response body, and throws it away."""
_CHUNK = 64 * 1024


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
    target: Target,
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
    target: Target, addresses: Sequence[Address], timeouts: _Timeouts, deadline: _Deadline
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
            target = parse_url(current)
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


def _body(target: Target, response: http.client.HTTPResponse, max_bytes: int, deadline: _Deadline) -> bytes:
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
        target = parse_url(url)
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
