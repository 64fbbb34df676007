"""Cluster statistics in Redis, written in the same transaction as what they count, read by ``GET /metrics``.

Kept in Redis (not in a process) so that every API replica reports the whole cluster:

- the job store counts every status change (``count_status``, in the change's own atomic write, so each counts
  once): jobs entering each status, jobs running now per type, first attempts' queue waits and finished jobs' run
  times per type, and from a finished job's result where its image embedding came from, or a batch's items that never ran;
- the batch store counts each item's outcome once (in its record script), the outbox each delivery attempt's;
- workers beat per queue (``tasks.roster``).

``read`` takes all of it in one round trip, every label value present (zero before its first count).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

import redis
from redis.client import Pipeline

from tasks import roster
from tasks.jobs import Job, JobStatus
from tasks.names import JOB_TYPES, Queue
from tasks.redis_keys import BATCH_ITEMS, DELIVERIES, EMBEDDINGS, ENTERED, RUNNING, queue_wait_key, runtime_key
from tasks.webhooks import DeliveryOutcome

INF = float("inf")
RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, INF)
"""Upper bounds (seconds) of the run-time histogram of finished jobs."""
QUEUE_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, INF)
"""Upper bounds (seconds) of the queue-wait histogram (created → first started)."""
EMBEDDING_SOURCES = ("memory", "shared", "miss")
"""A job summary's ``embedding``: this worker's cache, the shared tier in object storage, or encoded by the job."""
BATCH_ITEM_OUTCOMES = ("succeeded", "failed", "not_run")
DELIVERY_OUTCOMES: tuple[str, ...] = get_args(DeliveryOutcome)
BUCKET = "in:"
"""A histogram hash's field of the observations in one bound (``in:0.5``: above the bound before, up to 0.5)."""


def count_status(pipe: Pipeline, job: Job, before: JobStatus) -> None:
    """Queue the counter writes for ``job`` having just moved from ``before`` to its status (in the store's atomic
    write)."""
    pipe.hincrby(ENTERED, job.status.value, 1)
    if job.status == JobStatus.RUNNING:
        pipe.hincrby(RUNNING, job.type, 1)
        if job.attempts == 1 and job.started_at is not None:  # a retry's wait would hold its backoff and first run
            wait = (job.started_at - job.created_at).total_seconds()
            observe(pipe, queue_wait_key(job.type), QUEUE_WAIT_BUCKETS, wait)
    elif before == JobStatus.RUNNING:  # running → queued (a retry) or terminal
        pipe.hincrby(RUNNING, job.type, -1)
    if job.status.is_terminal and job.started_at is not None and job.finished_at is not None:
        run = (job.finished_at - job.started_at).total_seconds()
        observe(pipe, runtime_key(job.type), RUNTIME_BUCKETS, run)
    if job.status.is_terminal and job.result is not None:
        _count_summary(pipe, job.type, job.result.summary)


def _count_summary(pipe: Pipeline, job_type: str, summary: dict[str, Any]) -> None:
    """Where an image job's embedding came from (batch items are left out: a batch encodes its images together just
    before their runs find them in memory), and how many of a batch's items never ran."""
    source = summary.get("embedding")
    if job_type != "batch" and source in EMBEDDING_SOURCES:
        pipe.hincrby(EMBEDDINGS, source, 1)
    not_run = summary.get("not_run")
    if job_type == "batch" and isinstance(not_run, int) and not_run > 0:
        pipe.hincrby(BATCH_ITEMS, "not_run", not_run)


def observe(pipe: Pipeline, key: str, buckets: Sequence[float], value: float) -> None:
    """Queue one observation of a histogram kept in the hash ``key``: a count in the smallest bound that holds it,
    and the sum (two writes; :class:`Histogram` accumulates the bounds when read)."""
    bound = next(b for b in buckets if value <= b)
    pipe.hincrby(key, f"{BUCKET}{bound!r}", 1)
    pipe.hincrbyfloat(key, "sum", value)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (the last one ``inf``), and the sum of the observed values."""

    buckets: list[tuple[float, int]]
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]

    @classmethod
    def from_hash(cls, fields: dict[str, str], bounds: Sequence[float]) -> Histogram:
        cumulative, running = [], 0
        for bound in bounds:
            running += int(fields.get(f"{BUCKET}{bound!r}", 0))
            cumulative.append((bound, running))
        return cls(cumulative, float(fields.get("sum", 0)))


@dataclass(frozen=True)
class Snapshot:
    """Everything ``GET /metrics`` reports from Redis. Every mapping has every key of its kind, zero when unseen."""

    entered: dict[str, int]
    """Job status → jobs that ever entered it."""
    running: dict[str, int]
    """Job type → jobs running now."""
    queue_waits: dict[str, Histogram]
    """Job type → first attempts' waits, created → started (seconds)."""
    run_times: dict[str, Histogram]
    """Job type → finished jobs' run times, started → finished (seconds)."""
    embeddings: dict[str, int]
    """``memory``, ``shared``, ``miss`` → succeeded jobs whose embedding came from there."""
    batch_items: dict[str, int]
    """``succeeded``, ``failed``, ``not_run`` → batch items that ended so."""
    deliveries: dict[str, int]
    """Webhook delivery attempt outcome → attempts."""
    workers: dict[str, int]
    """Queue → workers alive on it."""


def read(client: redis.Redis, now: float | None = None) -> Snapshot:
    """Every statistic, in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for key in (ENTERED, RUNNING, EMBEDDINGS, BATCH_ITEMS, DELIVERIES):
            pipe.hgetall(key)
        for job_type in JOB_TYPES:
            pipe.hgetall(queue_wait_key(job_type))
            pipe.hgetall(runtime_key(job_type))
        roster.count_alive(pipe, time.time() if now is None else now)
        replies: Iterator[Any] = iter(pipe.execute())
    entered, running, embeddings, batch_items, deliveries = (cast(dict[str, str], next(replies)) for _ in range(5))
    waits, runs = {}, {}
    for job_type in JOB_TYPES:
        waits[job_type] = Histogram.from_hash(next(replies), QUEUE_WAIT_BUCKETS)
        runs[job_type] = Histogram.from_hash(next(replies), RUNTIME_BUCKETS)
    return Snapshot(
        entered=_counts(entered, [s.value for s in JobStatus]),
        running=_counts(running, JOB_TYPES),
        queue_waits=waits,
        run_times=runs,
        embeddings=_counts(embeddings, EMBEDDING_SOURCES),
        batch_items=_counts(batch_items, BATCH_ITEM_OUTCOMES),
        deliveries=_counts(deliveries, DELIVERY_OUTCOMES),
        workers={queue.value: int(next(replies)) for queue in Queue},
    )


def _counts(fields: dict[str, str], names: Sequence[str]) -> dict[str, int]:
    """``names`` (every one, zero when absent) → their counts, then any other field found (in sorted order)."""
    counts = {name: int(fields.get(name, 0)) for name in names}
    return counts | {name: int(fields[name]) for name in sorted(fields) if name not in counts}
