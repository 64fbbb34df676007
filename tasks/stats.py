"""Job statistics in Redis: counted by the job store on every status change, read by ``GET /metrics``.

Kept in Redis (not in a process) so that every API replica reports the whole cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis
from redis.client import Pipeline

from tasks.jobs import Job
from tasks.names import JOB_TYPES
from tasks.redis_keys import ENTERED, runtime_key

RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
"""Upper bounds (seconds) of the run-time histogram of finished jobs."""


def count_status(pipe: Pipeline, job: Job) -> None:
    """Queue the counter writes for ``job`` having just entered its status (inside the store's MULTI)."""
    pipe.hincrby(ENTERED, job.status.value, 1)
    if job.status.is_terminal and job.started_at is not None and job.finished_at is not None:
        seconds = (job.finished_at - job.started_at).total_seconds()
        key = runtime_key(job.type)
        for bound in RUNTIME_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(key, repr(bound), 1)
        pipe.hincrbyfloat(key, "sum", seconds)


@dataclass(frozen=True)
class RunTimes:
    """One job type's histogram: cumulative counts per bound of ``RUNTIME_BUCKETS``, and the sum of seconds."""

    buckets: list[tuple[float, int]]
    total_seconds: float


def entered(client: redis.Redis) -> dict[str, int]:
    """Status → how many jobs ever entered it."""
    counts = cast(dict[str, str], client.hgetall(ENTERED))
    return {status: int(count) for status, count in counts.items()}


def run_times(client: redis.Redis) -> dict[str, RunTimes]:
    """Job type → its run-time histogram."""
    found = {}
    for job_type in JOB_TYPES:
        stats = cast(dict[str, str], client.hgetall(runtime_key(job_type)))
        buckets = [(bound, int(stats.get(repr(bound), 0))) for bound in RUNTIME_BUCKETS]
        found[job_type] = RunTimes(buckets, float(stats.get("sum", 0)))
    return found
