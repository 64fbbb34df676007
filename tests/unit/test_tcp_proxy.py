"""The tests' TCP proxy (tests/support/tcp_proxy.py), against tiny local servers: the latency it adds (a round trip
costs at least ``rtt``, chunks are delayed, not serialised), its exact counts of connections and HTTP requests
(keep-alive, bodies that look like requests, chunked bodies, ``Expect: 100-continue``), and down/up."""

from __future__ import annotations

import http.client
import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.tcp_proxy import RequestCounter, TcpProxy, Traffic

LOOKALIKE = b"GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\nPUT /nor-this HTTP/1.1\r\nContent-Length: 0\r\n\r\n"


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class Answer(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: reads each request's body (Content-Length or chunked), answers 200 with a body."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)
            self.rfile.readline()  # the CRLF after the last (empty) chunk
        else:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"" if self.command == "HEAD" else LOOKALIKE
        self.send_response(200)
        self.send_header("Content-Length", str(len(LOOKALIKE)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1]
        server.shutdown()


@pytest.fixture
def http_port() -> Iterator[int]:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1]
        server.shutdown()


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.down()


def proxy_to(port: int, proxies: list[TcpProxy], rtt: float = 0.0) -> TcpProxy:
    proxies.append(proxy := TcpProxy(port, rtt))
    return proxy


def received(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_a_round_trip_costs_the_rtt_more(echo_port: int, proxies: list[TcpProxy]) -> None:
    fast, slow = proxy_to(echo_port, proxies), proxy_to(echo_port, proxies, rtt=0.2)
    times = {}
    for name, proxy in (("fast", fast), ("slow", slow)):
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(b"warm")
            received(sock, 4)  # the connection's own set-up is not what is timed
            started = time.monotonic()
            sock.sendall(b"ping")
            assert received(sock, 4) == b"ping"
            times[name] = time.monotonic() - started
    assert times["slow"] >= 0.2
    assert times["fast"] < 0.1


@pytest.mark.parametrize("handshake_rtts", [0, 1, 2])
def test_a_new_connection_costs_its_handshake_round_trips_more(
    echo_port: int, proxies: list[TcpProxy], handshake_rtts: int
) -> None:
    """TCP's handshake (and TLS's): the first bytes reach the server that many round trips later than they would
    on an open connection."""
    proxies.append(proxy := TcpProxy(echo_port, rtt=0.4, handshake_rtts=handshake_rtts))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"first")
        assert received(sock, 5) == b"first"
    assert (1 + handshake_rtts) * 0.4 <= time.monotonic() - started < (1 + handshake_rtts) * 0.4 + 0.3


def test_the_delay_adds_latency_without_serialising_chunks(echo_port: int, proxies: list[TcpProxy]) -> None:
    """Ten chunks 30 ms apart through a 300 ms proxy: the last echo is back about 300 ms after it was sent, not
    after the ten delays one behind the other (3 s)."""
    proxy = proxy_to(echo_port, proxies, rtt=0.3)
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"warm")
        received(sock, 4)  # past the new connection's handshake delay
        started = time.monotonic()
        for i in range(10):
            sock.sendall(bytes([i]) * 100)
            time.sleep(0.03)
        data = received(sock, 1000)
        elapsed = time.monotonic() - started
    assert data == b"".join(bytes([i]) * 100 for i in range(10))
    assert 0.3 + 9 * 0.03 <= elapsed < 0.3 + 10 * 0.03 + 0.5


def test_requests_are_counted_one_by_one_on_a_kept_alive_connection(http_port: int, proxies: list[TcpProxy]) -> None:
    proxy = proxy_to(http_port, proxies, rtt=0.02)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    connection.request("GET", "/bucket/a?x=1")
    calls = [
        ("PUT", "/bucket/b", {"body": LOOKALIKE * 1000}),  # ~100 KB: several chunks, request lines inside
        ("HEAD", "/bucket/c", {}),
        ("POST", "/bucket/d", {"body": iter([LOOKALIKE, b"0\r\n\r\n", LOOKALIKE]), "encode_chunked": True}),
        ("PUT", "/bucket/e", {"body": LOOKALIKE, "headers": {"Expect": "100-continue"}}),
        ("DELETE", "/bucket/f", {}),
    ]
    assert connection.getresponse().read() == LOOKALIKE
    for method, target, kwargs in calls:
        connection.request(method, target, **kwargs)  # type: ignore[arg-type]
        connection.getresponse().read()
    connection.close()
    expected = [("GET", "/bucket/a?x=1"), *((method, target) for method, target, _ in calls)]
    wait_for_requests(proxy, len(expected))
    traffic = proxy.traffic()
    assert (traffic.connections, list(traffic.requests), traffic.unparsed) == (1, expected, 0)

    proxy.reset()
    for _ in range(2):
        other = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        other.request("GET", "/again")
        other.getresponse().read()
        other.close()
    wait_for_requests(proxy, 2)
    assert proxy.traffic() == Traffic(2, (("GET", "/again"), ("GET", "/again")), 0)


def test_a_stream_that_is_not_http_is_counted_as_unparsed() -> None:
    counter = RequestCounter()
    assert counter.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n") == [("GET", "/a")]
    assert counter.feed(b"\x16\x03\x01 not http\r\n\r\n") == []
    assert counter.failed
    assert counter.feed(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n") == []


def test_request_headers_split_across_chunks_count_once() -> None:
    counter = RequestCounter()
    stream = b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /HEAD /k2 HTTP/1.1\r\nHost: x\r\n\r\n"
    found = [request for byte in range(len(stream)) for request in counter.feed(stream[byte : byte + 1])]
    assert found == [("PUT", "/k"), ("HEAD", "/k2")]


def test_down_refuses_and_cuts_connections_and_up_brings_it_back(echo_port: int, proxies: list[TcpProxy]) -> None:
    proxy = proxy_to(echo_port, proxies, rtt=0.01)
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"x")
        received(sock, 1)
        proxy.down()
        sock.settimeout(5)
        assert sock.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port)).close()
    proxy.up()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"y")
        assert received(sock, 1) == b"y"
    assert proxy.traffic().connections == 2


def wait_for_requests(proxy: TcpProxy, count: int) -> None:
    """The client has its answers; the proxy's reading thread may still be counting the last request's bytes."""
    deadline = time.monotonic() + 5
    while len(proxy.traffic().requests) < count and time.monotonic() < deadline:
        time.sleep(0.01)
