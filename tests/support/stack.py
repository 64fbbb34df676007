"""A real samq deployment for integration tests: its own redis-server, the API over HTTP (waitress, in a
subprocess), and real ``samq worker`` processes (Celery prefork), on local storage or a moto S3 endpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from samq.client import Client
from samq.embedded import ALL_QUEUES, die_with_parent, free_port, samq_command, wait_for
from storage import make_store
from storage.base import ObjectStore
from storage.settings import StorageSettings
from tasks.broker import celery_app
from tasks.dispatch import Dispatcher
from tasks.names import Queue
from tasks.settings import QueueSettings

TEST_IMAGE_SIZE = 256


def model_env() -> dict[str, str]:
    """The dev/test switches: the real SAM2 architecture, seeded random weights, shrunk input."""
    return {"SAMQ_RANDOM_WEIGHTS": "1", "SAMQ_IMAGE_SIZE": str(TEST_IMAGE_SIZE), "SAMQ_WORKER_DEVICE": "cpu"}


@dataclass
class Stack:
    redis_url: str
    env: dict[str, str]
    logs: Path
    api_url: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def client(self) -> Client:
        """A client that retries nothing, so that tests see the API's every answer (429s and 503s too)."""
        return Client(self.api_url, max_retries=0)

    def client_for(self, api_key: str) -> Client:
        return Client(self.api_url, api_key=api_key, max_retries=0)

    @property
    def objects(self) -> ObjectStore:
        return make_store(StorageSettings(**_storage_kwargs(self.env)))

    @property
    def queue_settings(self) -> QueueSettings:
        return QueueSettings(redis_url=self.redis_url)

    def dispatcher(self) -> Dispatcher:
        """A producer on this stack's broker (what the API sends with)."""
        return Dispatcher(celery_app(self.queue_settings), self.queue_settings)

    def start_api(self, timeout: float = 30) -> None:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.env["SAMQ_STORAGE_PUBLIC_URL"] = self.api_url
        self.api = self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
        probe = f"{self.api_url}/readyz"
        wait_for(lambda: urllib.request.urlopen(probe, timeout=2).close(), self.api, "the API", timeout)

    def start_worker(
        self,
        queues: str = ALL_QUEUES,
        extra_env: dict[str, str] | None = None,
        *,
        unset: Iterable[str] = (),
        timeout: float = 90,
    ) -> subprocess.Popen[bytes]:
        """A real worker in its own process group (so a test can kill -9 parent and child together), ready when it
        answers a ping on its first queue. ``unset``: variables the worker must not inherit (not even from here)."""
        worker = self._spawn(f"worker-{len(self.workers)}", ["worker", "--queues", queues], extra_env, unset)
        self.workers.append(worker)
        dispatch = self.dispatcher()
        first = Queue(queues.split(",", maxsplit=1)[0])
        wait_for(lambda: dispatch.ping(first, timeout=5), worker, "a worker", timeout)
        return worker

    def pool_process(self, worker: subprocess.Popen[bytes]) -> Any:
        """The ``psutil.Process`` of a worker's one prefork pool child (concurrency 1): the process that runs jobs."""
        children = psutil.Process(worker.pid).children()
        if len(children) != 1:
            raise RuntimeError(
                f"expected one pool process under the worker {worker.pid}, found {[c.pid for c in children]}"
            )
        return children[0]

    def stop_worker(self, worker: subprocess.Popen[bytes], timeout: float = 20) -> None:
        """Stop one worker as ``stop`` does (SIGTERM to its group, SIGKILL after ``timeout`` seconds)."""
        _terminate(worker, timeout)
        self.workers.remove(worker)

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """kill -9 of the whole worker: the Celery parent and its pool children."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        self.workers.remove(worker)

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, *([self.api] if self.api else [])]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.workers.clear()

    def _spawn(
        self, name: str, args: list[str], extra_env: dict[str, str] | None = None, unset: Iterable[str] = ()
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, **self.env, **(extra_env or {})}
        for key in unset:
            env.pop(key, None)
        return subprocess.Popen(
            samq_command(*args),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 (a killed test run leaves nothing behind)
        )


def stack_env(redis_url: str, storage: dict[str, str]) -> dict[str, str]:
    return {
        "SAMQ_REDIS_URL": redis_url,
        "SAMQ_LEASE_SECONDS": "3",
        "SAMQ_REAP_INTERVAL_SECONDS": "1",
        "SAMQ_MAX_ATTEMPTS": "3",
        "SAMQ_RETRY_BACKOFF_SECONDS": "0.2",
        "SAMQ_API_MAX_BASE64_BYTES": str(2 * 1024 * 1024),
        "SAMQ_API_RATE_PER_SECOND": "1000",  # tests that check rate limits set their own per tenant
        "SAMQ_API_RATE_BURST": "1000",
        "SAMQ_WEBHOOK_POLL_SECONDS": "0.2",
        "SAMQ_WEBHOOK_CLAIM_SECONDS": "5",
        "SAMQ_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,1,1,2,2,3,3,5,5",
        "SAMQ_WORKER_TRACK_CHUNK_FRAMES": "8",  # video results (and resume points) every 8 frames,
        "SAMQ_WORKER_TRACK_CHUNK_SECONDS": "3600",  # never by age: a slow host would cut chunks short
        "SAMQ_BATCH_ENCODE_SIZE": "4",  # batches encode 4 images at a time (CPU's default is one at a time)
        "SAMQ_API_ROBOFLOW_SAM2_VERSION": "hiera_tiny",  # Roboflow's default, hiera_large, is slow on CPU
        "PYTHONUNBUFFERED": "1",
        **model_env(),
        **storage,
    }


def local_storage_env(root: Path) -> dict[str, str]:
    return {"SAMQ_STORAGE_BACKEND": "local", "SAMQ_STORAGE_DIR": str(root)}


def s3_storage_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "SAMQ_STORAGE_BACKEND": "s3",
        "SAMQ_STORAGE_S3_ENDPOINT_URL": endpoint,
        "SAMQ_STORAGE_S3_BUCKET": bucket,
        "SAMQ_STORAGE_S3_ACCESS_KEY_ID": "testing",
        "SAMQ_STORAGE_S3_SECRET_ACCESS_KEY": "testing",
    }


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _storage_kwargs(env: dict[str, str]) -> dict[str, Any]:
    prefix = "SAMQ_STORAGE_"
    return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
