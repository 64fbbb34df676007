"""The live workers of each queue, from heartbeats in Redis.

Every worker's main process beats from its housekeeping timer: in one sorted set per queue it consumes, its Celery
node name scored by when the beat lapses. ``GET /metrics`` counts the members whose beat has not lapsed: one
``ZCOUNT`` per queue at scrape time, with no broadcast to the workers (a Celery ping would wait on every worker, and
on a timeout for the dead ones). A worker that stops cleanly leaves at once; one that is killed lapses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis
from redis.client import Pipeline

from tasks.names import Queue
from tasks.redis_keys import workers_key

LAPSE_AFTER_BEATS = 3
"""A worker counts as gone after this many beat periods without a beat..."""
MIN_LAPSE_SECONDS = 10.0
"""...and never sooner than this (a housekeeping pass may hold the timer for a while)."""


def lapse_seconds(beat_seconds: float) -> float:
    """How long one beat keeps a worker alive, for a worker that beats every ``beat_seconds``."""
    return max(LAPSE_AFTER_BEATS * beat_seconds, MIN_LAPSE_SECONDS)


def beat(client: redis.Redis, worker: str, queues: Iterable[Queue], lapse: float) -> None:
    """``worker`` is alive on ``queues`` for ``lapse`` more seconds; workers whose beat lapsed are dropped."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zadd(workers_key(queue.value), {worker: now + lapse})
            pipe.zremrangebyscore(workers_key(queue.value), "-inf", now)
        pipe.execute()


def leave(client: redis.Redis, worker: str, queues: Iterable[Queue]) -> None:
    """``worker`` stops: off every queue's roster at once."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrem(workers_key(queue.value), worker)
        pipe.execute()


def count_alive(pipe: Pipeline, now: float) -> None:
    """Queue one ``ZCOUNT`` per queue (in ``Queue`` order) on ``pipe``: the workers whose beat lapses after ``now``."""
    for queue in Queue:
        pipe.zcount(workers_key(queue.value), f"({now!r}", "+inf")
