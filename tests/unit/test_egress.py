"""The SSRF guard and pinned outbound HTTP (tasks/egress.py): hostile URLs never reach a socket, and the servers
that are reached all listen on 127.0.0.1, allow-listed by each test that talks to them."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from tasks import egress
from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnresolvableHostError,
    UrlRefusedError,
)
from tasks.media import MediaSource
from tasks.media import UrlRefusedError as UrlRefusedErrorFromMedia
from tasks.settings import QueueSettings
from tasks.specs import UrlImage

pytestmark = pytest.mark.unit

LOOPBACK_1 = (IPv4Network("127.0.0.1/32"),)
PUBLIC = "93.184.215.14"


# --- no real connection may leave this machine, whatever the guard does ------------------------------------------


@pytest.fixture(autouse=True)
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Any attempt to connect to a non-loopback address, or to resolve a ``.test`` name through the system, fails."""
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        try:
            loopback = ipaddress.ip_address(str(host)).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            attempts.append(address)
            raise AssertionError(f"connection attempt to {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            check(address)
        return real_connect_ex(self, address)

    def create_connection(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        check(address)
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if isinstance(host, str) and host.endswith(".test"):
            attempts.append(host)
            raise AssertionError(f"{host} was resolved by the system, not by the test's resolver")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert attempts == []


class Names:
    """A resolver stub: each name answers its lists in turn (the last one repeats); other names go to the system."""

    def __init__(self, **answers: list[list[str]]) -> None:
        self.answers = {name.replace("_", "."): lists for name, lists in answers.items()}
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        if not host.endswith(".test") and host != "localhost":
            return egress.system_resolver(host, port)
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        turns = self.answers[host]
        return turns[min(self.calls.count(host), len(turns)) - 1]


# --- local servers ----------------------------------------------------------------------------------------------

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    host: str | None
    user_agent: str | None
    headers: dict[str, str]
    body: bytes


class Server:
    """A threaded HTTP server on 127.0.0.1 that answers each path as the test says and records every request."""

    def __init__(self, wrap: Callable[[socket.socket], socket.socket] | None = None) -> None:
        self.routes: dict[str, Answer] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.answer(self)

            def do_POST(self) -> None:
                outer.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if wrap is not None:
            self.httpd.socket = wrap(self.httpd.socket)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.seen.append(
            Seen(handler.command, handler.path, headers.get("host"), headers.get("user-agent"), headers, body)
        )
        route = self.routes.get(handler.path)
        try:
            if route is None:
                handler.send_error(404)
            else:
                route(handler)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other_server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def ok(body: bytes = b"hello", *, length: bool = True) -> Answer:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return answer


def status(code: int) -> Answer:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def redirect(location: str, code: int = 302) -> Answer:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def drip_body(server: Server, *, announce: int = 1000) -> Answer:
    """Headers at once, then one byte of the body every 0.2 s."""

    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(announce))
        h.end_headers()
        for _ in range(announce):
            if server.release.wait(0.2):
                return
            h.wfile.write(b"x")

    return answer


def drip_head(server: Server) -> Answer:
    """A status line, then one byte of an endless header every 0.2 s."""

    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not server.release.wait(0.2):
            h.wfile.write(b"a")

    return answer


def hang(server: Server) -> Answer:
    def answer(h: http.server.BaseHTTPRequestHandler) -> None:
        server.release.wait(10)

    return answer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, *, allowed: tuple[egress.Network, ...] = LOOPBACK_1, **kwargs: object) -> bytes:
    options: dict[str, object] = {
        "max_bytes": 1 << 20,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "total_seconds": 10.0,
        **kwargs,
    }
    return egress.fetch(url, allowed=allowed, **options)


def post(url: str, body: bytes = b"{}", **kwargs: object) -> egress.PostOutcome:
    options: dict[str, object] = {"allowed": LOOPBACK_1, "connect_timeout": 2.0, "read_timeout": 2.0, **kwargs}
    return egress.post(url, body, {"Content-Type": "application/json"}, **options)


# --- hostile URLs ---------------------------------------------------------------------------------------------------

NAMES = Names(
    metadata_test=[["127.0.0.1"]],
    mixed_test=[[PUBLIC, "10.0.0.1"]],
    public_test=[[PUBLIC]],
)

HOSTILE = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address (the cloud metadata"),
    ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "of 127.0.0.1, which is a loopback address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
    ("http://017700000001/", "127.0.0.1 is a loopback address"),
    ("http://127.1:8080/", "127.0.0.1 is a loopback address"),
    ("http://metadata.test/", "metadata.test: 127.0.0.1 is a loopback address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://100.100.100.200/", "carrier-grade NAT"),  # Alibaba Cloud's metadata address
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://0/", "0.0.0.0 is an unspecified address"),
    ("http://0.1.2.3/", "0.1.2.3 is a 'this network' address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://255.255.255.255/", "the broadcast address"),
    ("http://240.0.0.1/", "a reserved address"),
    ("http://198.18.0.1/", "a benchmarking address"),
    ("http://192.0.2.1/", "a documentation address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private (unique local) address"),
    ("http://[fd00:ec2::254]/", "private (unique local)"),  # AWS's IPv6 metadata address
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://[::]/", ":: is an unspecified address"),
    ("http://[::127.0.0.1]/", "an IPv4-compatible form of 127.0.0.1, which is a loopback address"),
    ("http://[::ffff:169.254.169.254]/", "the cloud metadata service"),
    ("http://[::ffff:10.0.0.1]/", "10.0.0.1, which is a private address"),
    ("http://[2002:7f00:1::]/", "a 6to4 form of 127.0.0.1, which is a loopback address"),
    ("http://[2002:a9fe:a9fe::]/", "a 6to4 form of 169.254.169.254"),
    ("http://[64:ff9b::a00:1]/", "a NAT64 form of 10.0.0.1, which is a private address"),
    ("http://[64:ff9b:1::a00:1]/", "a local-use NAT64 address"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "a Teredo address"),
    ("http://[2001:db8::1]/", "a documentation address"),
    ("http://[100::1]/", "a discard-only address"),
    ("http://[4000::1]/", "outside 2000::/3"),
    ("http://mixed.test/", "mixed.test: 10.0.0.1 is a private address"),
    ("file:///etc/passwd", "is not an http(s) URL"),
    ("gopher://127.0.0.1:6379/_INFO", "is not an http(s) URL"),
    ("ftp://public.test/", "is not an http(s) URL"),
    ("http:///no-host", "has no host"),
    ("http://public.test:99999/", "is not a valid URL"),
    ("http://public.test:0/", "has an invalid port"),
    ("http://user:secret@public.test/", "credentials"),
    ("http://public.test/\r\nX-Injected: 1", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_check_url_refuses_hostile_urls(url: str, reason: str) -> None:
    with pytest.raises(UrlRefusedError) as refused:
        egress.check_url(url, (), NAMES)
    assert reason in refused.value.message
    assert refused.value.code == "url_refused"


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_fetch_refuses_hostile_urls_without_connecting(url: str, reason: str) -> None:
    with pytest.raises(UrlRefusedError) as refused:
        fetch(url, allowed=(), resolver=NAMES)
    assert reason in refused.value.message


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_post_refuses_hostile_urls_without_connecting(url: str, reason: str) -> None:
    outcome = post(url, allowed=(), resolver=NAMES)
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("refused: ")
    assert reason in outcome.error


def test_literal_spellings_are_normalised_by_the_system_resolver() -> None:
    for spelling in ("2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001"):
        with pytest.raises(UrlRefusedError, match=r"127\.0\.0\.1 is a loopback address"):
            egress.resolve(spelling, 80, ())


def test_the_reason_names_the_address_and_its_kind() -> None:
    assert egress.forbidden_reason(IPv4Address("127.0.0.1"), ()) == "127.0.0.1 is a loopback address"
    assert egress.forbidden_reason(IPv4Address("10.0.0.1"), ()) == "10.0.0.1 is a private address"
    assert egress.forbidden_reason(IPv6Address("::1"), ()) == "::1 is a loopback address"


@pytest.mark.parametrize(
    "address",
    [
        IPv4Address(PUBLIC),
        IPv4Address("8.8.8.8"),
        IPv4Address("1.1.1.1"),
        IPv6Address("2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
        IPv6Address(f"::ffff:{PUBLIC}"),  # IPv4-mapped public
        IPv6Address("2002:5db8:d70e::"),  # 6to4 of a public address
        IPv6Address(f"64:ff9b::{PUBLIC}"),  # NAT64 of a public address
    ],
)
def test_public_addresses_are_allowed(address: egress.Address) -> None:
    assert egress.forbidden_reason(address, ()) is None


def test_a_name_with_only_public_addresses_resolves() -> None:
    assert egress.resolve("public.test", 443, (), NAMES) == [IPv4Address(PUBLIC)]
    egress.check_url("https://public.test/image.png", (), NAMES)


def test_the_allow_list_exempts_its_networks_only() -> None:
    allowed = (IPv4Network("10.0.0.0/8"),)
    assert egress.forbidden_reason(IPv4Address("10.1.2.3"), allowed) is None
    assert egress.forbidden_reason(IPv6Address("::ffff:10.1.2.3"), allowed) is None  # embedded: same rules
    assert egress.forbidden_reason(IPv4Address("192.168.1.1"), allowed) == "192.168.1.1 is a private address"
    assert egress.forbidden_reason(IPv4Address("10.1.2.3"), (IPv4Network("10.2.0.0/16"),)) is not None
    assert egress.forbidden_reason(IPv6Address("fd00::1"), (IPv6Network("fd00::/8"),)) is None


def test_the_allow_list_comes_from_samq_allow_private_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_ALLOW_PRIVATE_URLS", "10.0.0.0/8, fd00::/8")
    allowed = QueueSettings().allowed_networks
    egress.check_url("http://10.1.2.3:8080/x", allowed)
    egress.check_url("http://[fd00::1]/x", allowed)
    with pytest.raises(UrlRefusedError):
        egress.check_url("http://172.16.0.1/x", allowed)


def test_an_unknown_name_is_its_own_error() -> None:
    with pytest.raises(UnresolvableHostError) as missing:
        egress.check_url("http://nowhere.test/", (), NAMES)
    assert isinstance(missing.value, MediaNotFoundError)
    assert missing.value.code == "media_not_found"


def test_a_temporary_dns_failure_is_transient() -> None:
    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(MediaFetchError) as failed:
        egress.check_url("http://flaky.test/", (), flaky)
    assert failed.value.retryable


def test_media_source_refuses_through_egress_and_keeps_its_old_import() -> None:
    assert UrlRefusedErrorFromMedia is UrlRefusedError
    media = MediaSource(None, None, max_bytes=1000, timeout=1.0, total_seconds=2.0)
    with pytest.raises(UrlRefusedError, match="loopback"):
        media.fetch(UrlImage(url="http://127.0.0.1:6379/"), "tenant")


# --- fetch, for real, on loopback -----------------------------------------------------------------------------------


def test_fetch_gets_the_body_with_samq_as_user_agent(server: Server) -> None:
    server.routes["/img?size=1"] = ok(b"png bytes")
    assert fetch(f"{server.url}/img?size=1") == b"png bytes"
    assert server.seen[0].user_agent == "samq"
    assert server.seen[0].host == f"127.0.0.1:{server.port}"


def test_fetch_reads_a_body_without_content_length(server: Server) -> None:
    server.routes["/img"] = ok(b"y" * 300_000, length=False)
    assert fetch(f"{server.url}/img") == b"y" * 300_000


def test_dns_rebinding_cannot_swap_the_address(server: Server) -> None:
    """The name is resolved once and the connection goes to that answer; a second lookup would say 10.0.0.1."""
    server.routes["/img"] = ok(b"pinned")
    names = Names(rebind_test=[["127.0.0.1"], ["10.0.0.1"]])
    assert fetch(f"http://rebind.test:{server.port}/img", resolver=names) == b"pinned"
    assert names.calls == ["rebind.test"]
    assert server.seen[0].host == f"rebind.test:{server.port}"
    with pytest.raises(UrlRefusedError, match=r"rebind\.test: 10\.0\.0\.1 is a private address"):
        fetch(f"http://rebind.test:{server.port}/img", resolver=names)


def test_each_redirect_hop_is_resolved_and_judged_again(server: Server) -> None:
    server.routes["/hop"] = redirect("/img")
    server.routes["/img"] = ok()
    names = Names(rebind_test=[["127.0.0.1"], ["127.0.0.2"]])
    with pytest.raises(UrlRefusedError, match=r"127\.0\.0\.2 is a loopback address"):
        fetch(f"http://rebind.test:{server.port}/hop", resolver=names)
    assert names.calls == ["rebind.test", "rebind.test"]
    assert server.paths() == ["/hop"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.2:{port}/img", "127.0.0.2 is a loopback address"),
        ("http://[::1]:{port}/img", "::1 is a loopback address"),
        ("http://localhost:{port}/img", "localhost: ::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("file:///etc/passwd", "file:///etc/passwd is not an http(s) URL"),
        ("gopher://127.0.0.1:{port}/_INFO", "is not an http(s) URL"),
    ],
)
def test_redirects_to_refused_places_are_refused(server: Server, location: str, reason: str) -> None:
    server.routes["/go"] = redirect(location.format(port=server.port), 301)
    server.routes["/img"] = ok()
    names = Names(localhost=[["127.0.0.1", "::1"]])
    with pytest.raises(UrlRefusedError) as refused:
        fetch(f"{server.url}/go", resolver=names)
    assert reason in refused.value.message
    assert server.paths() == ["/go"]


def test_redirects_within_the_allowed_host_are_followed(server: Server) -> None:
    server.routes["/a"] = redirect("/b", 301)
    server.routes["/b"] = redirect(f"{server.url}/c", 307)
    server.routes["/c"] = redirect("d", 308)
    server.routes["/d"] = ok(b"three hops")
    assert fetch(f"{server.url}/a") == b"three hops"
    assert server.paths() == ["/a", "/b", "/c", "/d"]


def test_a_fourth_redirect_is_refused(server: Server) -> None:
    for hop in range(1, 5):
        server.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}", 302 if hop % 2 else 303)
    server.routes["/r5"] = ok()
    with pytest.raises(UrlRefusedError, match="redirected more than 3 times"):
        fetch(f"{server.url}/r1")
    assert server.paths() == ["/r1", "/r2", "/r3", "/r4"]


def test_a_redirect_without_location_is_refused(server: Server) -> None:
    server.routes["/nowhere"] = status(302)
    with pytest.raises(UrlRefusedError, match="without a Location"):
        fetch(f"{server.url}/nowhere")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (404, MediaNotFoundError),
        (410, MediaNotFoundError),
        (403, UrlRefusedError),
        (400, UrlRefusedError),
        (429, MediaFetchError),
        (500, MediaFetchError),
        (503, MediaFetchError),
    ],
)
def test_status_codes_map_to_job_errors(server: Server, code: int, error: type[Exception]) -> None:
    server.routes["/x"] = status(code)
    with pytest.raises(error, match=f"answered {code}"):
        fetch(f"{server.url}/x")


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(MediaFetchError, match="connection refused") as failed:
        fetch(f"http://127.0.0.1:{closed_port()}/x")
    assert failed.value.retryable


def test_a_body_over_the_limit_is_refused(server: Server) -> None:
    server.routes["/exact"] = ok(b"z" * 1000)
    server.routes["/big"] = ok(b"z" * 1001, length=False)
    assert fetch(f"{server.url}/exact", max_bytes=1000) == b"z" * 1000
    with pytest.raises(MediaTooLargeError, match=r"larger than 1000 bytes \(SAMQ_WORKER_MAX_MEDIA_BYTES\)"):
        fetch(f"{server.url}/big", max_bytes=1000)


def test_a_content_length_over_the_limit_is_refused_before_reading(server: Server) -> None:
    server.routes["/huge"] = drip_body(server, announce=10**9)
    started = time.monotonic()
    with pytest.raises(MediaTooLargeError, match="SAMQ_WORKER_MAX_MEDIA_BYTES"):
        fetch(f"{server.url}/huge", max_bytes=1000, read_timeout=5.0)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("drip", [drip_body, drip_head])
def test_a_slow_drip_ends_at_the_total_deadline(server: Server, drip: Callable[[Server], Answer]) -> None:
    server.routes["/slow"] = drip(server)
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match=r"longer than 1s to download \(SAMQ_WORKER_FETCH_TOTAL_SECONDS\)"):
        fetch(f"{server.url}/slow", read_timeout=5.0, total_seconds=1.0)
    assert 0.9 < time.monotonic() - started < 2.0


def test_a_silent_server_ends_at_the_read_timeout(server: Server) -> None:
    server.routes["/silent"] = hang(server)
    with pytest.raises(MediaFetchError, match=r"timeout after 0\.3s waiting for the server") as failed:
        fetch(f"{server.url}/silent", read_timeout=0.3)
    assert failed.value.retryable


def test_a_truncated_body_is_transient(server: Server) -> None:
    def short(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.write(b"only ten..")

    server.routes["/short"] = short
    with pytest.raises(MediaFetchError, match="before the body's end"):
        fetch(f"{server.url}/short")


# --- post, for webhooks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 204, 410, 500])
def test_post_returns_the_status(server: Server, code: int) -> None:
    server.routes["/hook"] = status(code)
    outcome = egress.post(
        f"{server.url}/hook",
        b'{"type":"job.succeeded"}',
        {"Content-Type": "application/json", "webhook-id": "msg_1"},
        allowed=LOOPBACK_1,
        connect_timeout=2.0,
        read_timeout=2.0,
    )
    assert (outcome.status, outcome.error) == (code, None)
    assert outcome.ok == (code < 300)
    assert outcome.elapsed_ms > 0
    seen = server.seen[0]
    assert (seen.method, seen.body, seen.user_agent) == ("POST", b'{"type":"job.succeeded"}', "samq")
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["content-type"] == "application/json"


def test_post_does_not_follow_redirects(server: Server, other_server: Server) -> None:
    other_server.routes["/target"] = status(200)
    server.routes["/hook"] = redirect(f"{other_server.url}/target")
    outcome = post(f"{server.url}/hook")
    assert (outcome.status, outcome.error) == (302, None)
    assert not outcome.ok
    assert server.paths() == ["/hook"]
    assert other_server.seen == []


def test_post_reads_little_of_a_large_response(server: Server) -> None:
    server.routes["/hook"] = ok(b"w" * (8 << 20))
    outcome = post(f"{server.url}/hook")
    assert (outcome.status, outcome.error) == (200, None)


def test_post_reports_a_timeout(server: Server) -> None:
    server.routes["/hook"] = hang(server)
    outcome = post(f"{server.url}/hook", read_timeout=0.3)
    assert outcome.status is None
    assert outcome.error == "timeout after 0.3s waiting for the server"


def test_post_has_a_total_deadline(server: Server) -> None:
    server.routes["/hook"] = drip_head(server)
    started = time.monotonic()
    outcome = post(f"{server.url}/hook", read_timeout=5.0, total_seconds=1.0)
    assert (outcome.status, outcome.error) == (None, "timeout after 1s in all")
    assert time.monotonic() - started < 2.0


def test_post_reports_a_refused_connection() -> None:
    outcome = post(f"http://127.0.0.1:{closed_port()}/hook")
    assert (outcome.status, outcome.error) == (None, "connection refused")


def test_post_reports_a_refused_address_without_connecting(only_loopback: list[object]) -> None:
    outcome = post("http://10.0.0.1/hook", allowed=())
    assert (outcome.status, outcome.error) == (None, "refused: 10.0.0.1 is a private address")
    assert only_loopback == []


def test_post_reports_an_unknown_name() -> None:
    outcome = post("http://nowhere.test/hook", resolver=NAMES)
    assert (outcome.status, outcome.error) == (None, "cannot resolve 'nowhere.test'")


# --- TLS: the certificate is checked against the URL's host, not the pinned address ---------------------------------


@dataclass(frozen=True)
class Tls:
    server: Server
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    cert_pem, key_pem, ca_pem = _certificate("pinned.test")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = Server(wrap=lambda sock: server_context.wrap_socket(sock, server_side=True))
    server.routes["/"] = ok(b"over tls")
    client = ssl.create_default_context(cadata=ca_pem.decode())
    yield Tls(server, client)
    server.close()


def _certificate(name: str) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a server certificate for ``name`` signed by it (PEM: certificate, key, CA)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, key, issuer, issuer_key, *, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if ca:
            usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("samq test CA", ca_key, "samq test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, key, "samq test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem), key_pem, ca.public_bytes(pem)


def test_https_connects_to_the_pinned_address_and_verifies_the_host_name(tls: Tls) -> None:
    conn = egress.PinnedHTTPSConnection(
        "pinned.test", tls.server.port, IPv4Address("127.0.0.1"), connect_timeout=2, read_timeout=2, context=tls.client
    )
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"over tls")
    finally:
        conn.close()
    assert tls.server.seen[0].host == f"pinned.test:{tls.server.port}"


def test_https_refuses_a_certificate_for_another_name(tls: Tls) -> None:
    conn = egress.PinnedHTTPSConnection(
        "other.test", tls.server.port, IPv4Address("127.0.0.1"), connect_timeout=2, read_timeout=2, context=tls.client
    )
    with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.test"):
        conn.connect()
    conn.close()
    assert tls.server.seen == []


def test_https_fetch_verifies_against_the_system_trust_store(tls: Tls) -> None:
    """``fetch`` uses the default context: a certificate from an unknown CA is a (transient) fetch failure."""
    names = Names(pinned_test=[["127.0.0.1"]])
    with pytest.raises(MediaFetchError, match="certificate verification failed"):
        fetch(f"https://pinned.test:{tls.server.port}/", resolver=names)
    assert names.calls == ["pinned.test"]
