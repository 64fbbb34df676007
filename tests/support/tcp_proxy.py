"""A TCP forwarder in front of a real server (the moto S3 endpoint), which a test can take down and bring back on
the same port: while it is down, connections are refused and open ones are cut, as when S3 is unreachable.

It can also stand for a far server: with ``rtt`` set, every chunk waits ``rtt / 2`` in each direction (a round trip
through the proxy costs ``rtt`` more), each direction a queue of timestamped chunks drained by a sender thread, so
that the delay adds latency without limiting throughput; and a new connection's first bytes wait ``handshake_rtts``
round trips more (default 1: TCP's handshake, which the proxy's local accept skips; TLS would add one or two). And it
counts what goes through: connections accepted, and HTTP requests on the client → server stream
(:class:`RequestCounter`), for the benchmark's requests per job.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass

import h11

from samq.embedded import free_port

CHUNK = 65536


@dataclass(frozen=True)
class Traffic:
    """What went through the proxy since it started or was last :meth:`TcpProxy.reset`: ``connections`` accepted,
    HTTP ``requests`` (method and target, in the order their headers arrived), and ``unparsed`` client streams that
    were not HTTP/1.x (counted no further)."""

    connections: int
    requests: tuple[tuple[str, str], ...]
    unparsed: int


class RequestCounter:
    """The HTTP/1.x requests on one client → server byte stream (keep-alive: several in turn), found at request
    boundaries only, by h11's parser: a body's bytes (Content-Length or chunked) are never taken for a request line.
    The body of a request that sent ``Expect: 100-continue`` is expected to follow (a server that refuses it leaves
    the rest of that stream mis-parsed: :attr:`failed`)."""

    def __init__(self) -> None:
        self._parser = h11.Connection(h11.SERVER)
        self.failed = False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The requests whose headers ``data`` completes (``b""``: the stream ended)."""
        found: list[tuple[str, str]] = []
        if self.failed:
            return found
        try:
            self._parser.receive_data(data)
            while True:
                event = self._parser.next_event()
                if isinstance(event, h11.Request):
                    found.append((event.method.decode(), event.target.decode(errors="replace")))
                elif isinstance(event, h11.EndOfMessage):  # the next request starts a fresh parser (a server's
                    leftover, closed = self._parser.trailing_data  # parser would wait for our response first)
                    self._parser = h11.Connection(h11.SERVER)
                    if leftover:  # (b"" would say the stream ended)
                        self._parser.receive_data(leftover)
                    if closed:
                        self._parser.receive_data(b"")
                elif event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return found
        except h11.RemoteProtocolError:
            self.failed = True
        return found


class TcpProxy:
    def __init__(self, target_port: int, rtt: float = 0.0, handshake_rtts: int = 1) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rtt = rtt
        """Seconds added to a round trip (half each way); read at every chunk, so it may change while running."""
        self.handshake_rtts = handshake_rtts
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._connections = 0
        self._requests: list[tuple[str, str]] = []
        self._unparsed = 0
        self.up()

    def up(self) -> None:
        """Listen (again) and forward every connection to the target."""
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread: a close alone would leave it
                listener.shutdown(socket.SHUT_RDWR)  # blocked in accept(), taking one more connection
            listener.close()
        for sock in sockets:
            _close(sock)

    def traffic(self) -> Traffic:
        """The counts so far (since the start or the last :meth:`reset`)."""
        with self._lock:
            return Traffic(self._connections, tuple(self._requests), self._unparsed)

    def reset(self) -> None:
        """Start counting afresh (open connections stay open; their later requests count)."""
        with self._lock:
            self._connections, self._requests, self._unparsed = 0, [], 0

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for sock in (client, server):  # forward each chunk as it comes (Nagle would hold small ones back)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, server))
                self._connections += 1
            accepted = time.monotonic()
            for source, sink, counter in ((client, server, RequestCounter()), (server, client, None)):
                chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
                threading.Thread(target=self._read, args=(source, chunks, accepted, counter), daemon=True).start()
                threading.Thread(target=self._send, args=(chunks, source, sink), daemon=True).start()

    def _read(
        self,
        source: socket.socket,
        chunks: queue.SimpleQueue[tuple[float, bytes]],
        accepted: float,
        counter: RequestCounter | None,
    ) -> None:
        """Queue each chunk from ``source`` with the time it is due at the other end (none before the handshake's
        round trips are over); ``b""`` when it ends."""
        try:
            while data := source.recv(CHUNK):
                ready = accepted + self.handshake_rtts * self.rtt
                chunks.put((max(time.monotonic(), ready) + self.rtt / 2, data))
                if counter is not None:
                    self._count(counter, data)
        except OSError:
            pass
        chunks.put((time.monotonic() + self.rtt / 2, b""))

    def _count(self, counter: RequestCounter, data: bytes) -> None:
        failed = counter.failed
        found = counter.feed(data)
        with self._lock:
            self._requests.extend(found)
            self._unparsed += counter.failed and not failed

    def _send(self, chunks: queue.SimpleQueue[tuple[float, bytes]], source: socket.socket, sink: socket.socket) -> None:
        """Write each chunk to ``sink`` when it is due; at the end of the stream (or a failed write) end both."""
        try:
            while True:
                due, data = chunks.get()
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:  # one side ended: end both (the other direction's threads then stop too)
            with self._lock:
                self._open.difference_update((source, sink))
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
