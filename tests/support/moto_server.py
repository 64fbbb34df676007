"""A real S3 endpoint for tests: moto's S3 app in a subprocess, served by waitress.

Not ``python -m moto.server``: werkzeug's development server under it answers every request with ``Connection:
close``, so no client can reuse a connection to it, and every request would pay a new TCP connection. Real S3 and
MinIO keep connections alive; so does waitress (with one fix, in :func:`serve`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from samq.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def moto_s3_server(startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve moto's S3 on a free port; yields its endpoint URL, stops it on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nobody drains it, and a full pipe blocks moto
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_answering(endpoint, process, log, startup_timeout)
            yield endpoint
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error is still an answer
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"moto server at {url} did not answer within {timeout}s")


def serve(port: int) -> None:
    """moto's S3 app under waitress on ``port``, until killed (this module's ``__main__``)."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress.channel import HTTPChannel

    send_continue = HTTPChannel.send_continue

    def send_continue_to_a_complete_request(self: HTTPChannel) -> None:
        """waitress 3.0.2 marks the request incomplete after its 100 Continue, even one without a body (Expect on
        ``Content-Length: 0``, as botocore sends for an empty PUT): it then waits forever for a body that never
        comes. Keep what the parser knew."""
        request = self.request
        assert request is not None  # called for the request being read
        completed = request.completed
        send_continue(self)
        request.completed = completed

    HTTPChannel.send_continue = send_continue_to_a_complete_request  # type: ignore[method-assign]
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(app, host="127.0.0.1", port=port, threads=16, _quiet=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
