"""A job waiting out a retry's backoff is held by the job store, not by a message in one worker's hands: a worker
killed during the wait, or Redis killed and restarted (AOF on), does not strand it. It runs again within the
backoff plus one housekeeping pass and succeeds exactly once. A queued job whose message is lost is sent again."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import redis

from samq.client import Client
from samq.embedded import free_port, redis_server
from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack, local_storage_env, stack_env

IMAGE = png_bytes(scene())
BACKOFF = 4.0
REAP = 1.0


class Flaky:
    """Serves the image on loopback, answering 503 (a transient failure) to the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.requests <= outer.failures:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(IMAGE)))
                self.end_headers()
                self.wfile.write(IMAGE)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/scene.png"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@contextmanager
def deployment(
    tmp_path: Path, redis_port: int, extra: dict[str, str] | None = None
) -> Iterator[tuple[Stack, ExitStack]]:
    """API and Redis (AOF) on a fixed port; the second value closes Redis (so a test can restart it)."""
    with ExitStack() as stack:
        redis = stack.enter_context(ExitStack())
        url = redis.enter_context(redis_server(tmp_path / "redis", port=redis_port, appendonly=True))
        env = {
            **local_storage_env(tmp_path / "objects"),
            "SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32",
            "SAMQ_RETRY_BACKOFF_SECONDS": str(BACKOFF),
            "SAMQ_REAP_INTERVAL_SECONDS": str(REAP),
            **(extra or {}),
        }
        running = Stack(url, stack_env(url, env), logs=tmp_path)
        stack.callback(running.stop)
        running.start_api()
        yield running, redis


def submit(client: Client, url: str) -> str:
    job = client.submit({"type": "segment", "image": {"url": url}, "prompts": [{"points": [{"x": 100, "y": 100}]}]})
    return str(job["id"])


def wait_for_retry(client: Client, job_id: str) -> float:
    """Wait until the first attempt failed transiently and the job is queued again; when that was seen."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job["status"] == "queued" and job["attempts"] == 1:
            assert job["error"]["code"] == "media_fetch_failed"
            return time.time()
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never went back to queued")


def started_epoch(job: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(job["started_at"]).timestamp()


def test_a_worker_killed_while_a_job_waits_out_its_backoff_loses_nothing(tmp_path: Path) -> None:
    flaky = Flaky(failures=1)
    with deployment(tmp_path, free_port()) as (running, _):
        first = running.start_worker()
        running.start_worker()  # the survivor
        client = running.client
        job_id = submit(client, flaky.url)
        requeued = wait_for_retry(client, job_id)
        running.kill_worker(first)  # whichever worker ran attempt 1: no message waits in either's hands

        done = client.wait(job_id, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and flaky.requests == 2  # the failed attempt and one more: exactly once
        assert started_epoch(done) - requeued <= BACKOFF + REAP + 2  # backoff + one housekeeping pass (+ slack)


def test_redis_killed_and_restarted_while_a_job_waits_out_its_backoff_loses_nothing(tmp_path: Path) -> None:
    flaky = Flaky(failures=1)
    port = free_port()
    with deployment(tmp_path, port) as (running, redis):
        running.start_worker()
        client = running.client
        job_id = submit(client, flaky.url)
        requeued = wait_for_retry(client, job_id)
        time.sleep(1.2)  # AOF fsyncs every second: the requeue is on disk
        restart_redis(redis, tmp_path, port)

        done = client.wait(job_id, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and flaky.requests == 2
        assert started_epoch(done) - requeued <= BACKOFF + REAP + 5  # + the worker's reconnection


def wait_running(client: Client, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while client.get(job_id)["status"] != "running":
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.05)


def restart_redis(redis: ExitStack, data: Path, port: int) -> None:
    """SIGKILL the stack's redis-server, then start it again on the same port and data (AOF)."""
    [server] = [p for p in psutil.process_iter(["name"]) if _listens(p, port)]
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    redis.close()
    redis.enter_context(redis_server(data / "redis", port=port, appendonly=True))


def _listens(process: psutil.Process, port: int) -> bool:
    try:
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False


def test_a_worker_holding_a_running_jobs_message_keeps_consuming_after_redis_restarts(tmp_path: Path) -> None:
    """Five Redis restarts (SIGKILL, then the same port and AOF) while the worker runs a job: each time the
    worker is still consuming afterwards, without restarting anything."""
    port = free_port()
    with deployment(tmp_path, port) as (running, redis):
        worker = running.start_worker(extra_env={"SAMQ_IMAGE_SIZE": "1024"})  # seconds of work per job: a wide window
        client = running.client
        image = {"base64": b64(png_bytes(scene(640, 480)))}
        for run in range(5):
            held = client.submit({"type": "segment", "image": image, "prompts": [{"points": [{"x": 9 + run, "y": 9}]}]})
            wait_running(client, held["id"])
            restart_redis(redis, tmp_path, port)
            fresh = client.submit({"type": "segment", "image": image, "prompts": [{"points": [{"x": 50, "y": run}]}]})
            done = client.wait(fresh["id"], timeout=180)
            assert done["status"] == "succeeded", (run, done["error"])
            assert client.wait(held["id"], timeout=180)["status"] == "succeeded", run
            assert worker.poll() is None, f"run {run}: the worker exited ({worker.returncode})"


def test_a_queued_job_whose_message_was_lost_is_sent_again(tmp_path: Path) -> None:
    with deployment(tmp_path, free_port(), {"SAMQ_ORPHAN_AFTER_SECONDS": "2"}) as (running, _):
        client = running.client
        image = {"base64": b64(png_bytes(scene()))}
        lost = client.submit({"type": "segment", "image": image, "prompts": [{"points": [{"x": 9, "y": 9}]}]})
        broker = redis.Redis.from_url(running.redis_url)
        assert broker.delete("interactive") == 1  # the message is gone (as with a worker killed as it took it)
        running.start_worker()
        started = time.monotonic()
        done = client.wait(lost["id"], timeout=60)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
        assert time.monotonic() - started < 2 + 2 * REAP + 5  # the orphan age, a pass or two, and slack
