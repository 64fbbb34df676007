"""Loopback HTTP for the egress tests: local servers that answer as a test says, and the guard's entry points
with test-sized limits. Every server listens on 127.0.0.1 only."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from tasks import egress, pinned_http

LOOPBACK_1 = (IPv4Network("127.0.0.1/32"),)
PUBLIC = "93.184.215.14"


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


def fetch(url: str, *, allowed: tuple[egress.Network, ...] = LOOPBACK_1, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {
        "max_bytes": 1 << 20,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "total_seconds": 10.0,
        **kwargs,
    }
    return pinned_http.fetch(url, allowed=allowed, **options)


def post(url: str, body: bytes = b"{}", **kwargs: Any) -> pinned_http.PostOutcome:
    options: dict[str, Any] = {"allowed": LOOPBACK_1, "connect_timeout": 2.0, "read_timeout": 2.0, **kwargs}
    return pinned_http.post(url, body, {"Content-Type": "application/json"}, **options)


NAMES = Names(
    metadata_test=[["127.0.0.1"]],
    mixed_test=[[PUBLIC, "10.0.0.1"]],
    public_test=[[PUBLIC]],
)
