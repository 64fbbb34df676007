"""A webhook receiver for tests: verifies every delivery with the reference Standard Webhooks implementation
(``standardwebhooks``, which also enforces the 5-minute timestamp tolerance) and answers per path:

- ``/flaky``: 500 for the first ``fail_first`` attempts of each ``webhook-id``, then 200;
- ``/ok``: 200; ``/gone``: 410; ``/redirect``: 302 to ``/target`` (which must never be reached).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import standardwebhooks


@dataclass
class Delivery:
    path: str
    webhook_id: str
    timestamp: int
    received_at: float
    verified: bool
    body: dict[str, Any]
    status: int


@dataclass
class Receiver:
    secrets: Callable[[], list[str]]
    """The secrets a delivery may be signed with (read when each request arrives)."""
    fail_first: int = 2
    slow_seconds: float = 30.0
    """How long ``/slow`` takes to answer."""
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str]]:
        verified = any(_verifies(secret, raw, headers) for secret in self.secrets())
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            earlier = sum(1 for d in self.deliveries if d.webhook_id == webhook_id)
            status, extra = 200, {}
            if not verified:
                status = 400
            elif path == "/flaky" and earlier < self.fail_first:
                status = 500
            elif path == "/gone":
                status = 410
            elif path == "/redirect":
                status, extra = 302, {"Location": "/target"}
            self.deliveries.append(
                Delivery(
                    path=path,
                    webhook_id=webhook_id,
                    timestamp=int(headers.get("webhook-timestamp", "0")),
                    received_at=time.time(),
                    verified=verified,
                    body=json.loads(raw) if verified else {},
                    status=status,
                )
            )
        return status, extra

    def of(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.deliveries)
            if predicate(seen):
                return seen
            time.sleep(0.1)
        raise AssertionError(f"the receiver did not see the expected deliveries in {timeout}s: {self.deliveries}")


def _verifies(secret: str, raw: bytes, headers: dict[str, str]) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(raw, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


@contextmanager
def receiving(receiver: Receiver, port: int = 0) -> Iterator[Receiver]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/slow":
                time.sleep(receiver.slow_seconds)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = receiver.handle(self.path, headers, raw)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
