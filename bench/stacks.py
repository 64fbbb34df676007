"""The deployments the bench measures: the test suite's :class:`~tests.support.stack.Stack` (redis-server, ``samq
api``, ``samq worker`` processes, each child in its own session so that Ctrl-C reaches only the bench), set up for
timing instead of for tests: real model sizes, the worker's device chosen as in production, no test-speed knobs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from samq.embedded import redis_server
from tasks.names import Queue
from tests.support.stack import Stack, local_storage_env

REPO = Path(__file__).resolve().parents[1]
"""The repository root: the bench's child processes run there, so that ``bench`` and samq import."""
DEFAULT_IMAGE_SIZE = 1024
"""The models' own input size; ``--image-size`` other than this sets ``SAMQ_IMAGE_SIZE``."""


def bench_env(redis_url: str, workdir: Path, image_size: int, extra_env: dict[str, str] | None) -> dict[str, str]:
    """Every process's environment: local storage under ``workdir``, seeded random weights (no checkpoint can be
    downloaded), the worker's device ``auto``; ``extra_env`` last."""
    env = {
        "SAMQ_REDIS_URL": redis_url,
        **local_storage_env((workdir / "objects").resolve()),
        "SAMQ_RANDOM_WEIGHTS": "1",
        "SAMQ_WORKER_DEVICE": "auto",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    if image_size != DEFAULT_IMAGE_SIZE:
        env["SAMQ_IMAGE_SIZE"] = str(image_size)
    return env


@contextmanager
def running_stack(workdir: Path, image_size: int, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A Redis without persistence and the API (no worker yet), under ``workdir``; all stopped on exit."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with redis_server(workdir / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, bench_env(redis_url, workdir, image_size, extra_env), logs)
        try:
            stack.start_api(timeout=60)
            yield stack
        finally:
            stack.stop()


def start_worker(
    stack: Stack, queues: Sequence[Queue], env: dict[str, str] | None = None, unset: Iterable[str] = ()
) -> subprocess.Popen[bytes]:
    """``samq worker --queues <queues>`` (concurrency 1), ready when it answers a ping on the first queue."""
    return stack.start_worker(",".join(q.value for q in queues), env, unset=unset, timeout=180)


@contextmanager
def worker(
    stack: Stack, queues: Sequence[Queue], env: dict[str, str] | None = None, unset: Iterable[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_worker`, stopped on exit (a section's own worker, or a fresh one per measurement)."""
    process = start_worker(stack, queues, env, unset)
    try:
        yield process
    finally:
        stack.stop_worker(process)


def log_tail(logs: Path, lines: int = 30) -> str:
    """The last lines of every log under ``logs`` (a stack's, once the stack is gone), for a failure report."""
    parts = []
    for path in sorted(logs.glob("*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
    return "\n".join(parts)
