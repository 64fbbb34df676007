"""Queued jobs whose message is gone. A message can vanish between the broker and a job's start: a worker that
took it dies before the attempt began (it stays unacknowledged until Redis's visibility timeout, hours), or a
Redis that lost its last second of writes. Nothing else would notice: leases cover running jobs only, and
``tasks.retries`` jobs waiting out a backoff.

Every queued job is a score in one sorted set (when it was last sent), written in the transactions that put it
in ``queued`` and removed by those that take it out. The housekeeping pass looks at jobs queued for longer than
``SAMQ_ORPHAN_AFTER_SECONDS`` and, for each, at the broker itself: the job's queue (a Redis list) and the
messages workers hold unacknowledged (Celery's ``unacked`` hash). A job whose id is in neither has no message:
it is sent again. A message in flight between the two (a worker mid-``BRPOP``) can look absent; the second
message that causes is harmless (``JobStore.start`` skips a job that is running or ended).

A message a worker holds is not proof of life: the worker may have died after taking it and before its job began.
A live worker begins at once (it takes one message at a time, ``worker_prefetch_multiplier=1``: the job starts, or
the shard is claimed, within milliseconds of the delivery), so :func:`held_since` lists the messages held longer
than ``SAMQ_ORPHAN_AFTER_SECONDS``, and the housekeeping pass puts those whose job never began back in their queue
(``Dispatcher.restore``: kombu's own restore, as at the visibility timeout).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import cast

import redis
from redis.client import Pipeline

from tasks.messages import TaskCall, read_call
from tasks.names import Queue
from tasks.redis_keys import ORPHAN_GATE, QUEUED

UNACKED = "unacked"
"""Celery's Redis transport: the hash of the messages workers hold (delivery tag → message)."""
UNACKED_INDEX = "unacked_index"
"""Celery's Redis transport: when each held message was delivered (delivery tag → unix time)."""
HELD_PER_PASS = 100


@dataclass(frozen=True)
class HeldMessage:
    """A message a worker took and has not acknowledged: its delivery tag, and what it asks for."""

    tag: str
    call: TaskCall


def held_since(client: redis.Redis, older_than: float) -> list[HeldMessage]:
    """The readable messages delivered more than ``older_than`` seconds ago and still unacknowledged, oldest first
    (at most ``HELD_PER_PASS``)."""
    cutoff = time.time() - older_than
    tags = cast(list[str], client.zrangebyscore(UNACKED_INDEX, "-inf", cutoff, start=0, num=HELD_PER_PASS))
    if not tags:
        return []
    held = []
    for tag, raw in zip(tags, cast(list[str | None], client.hmget(UNACKED, tags)), strict=True):
        try:
            message = json.loads(raw)[0] if raw is not None else None
        except (ValueError, TypeError, IndexError, KeyError):
            message = None
        call = read_call(message) if isinstance(message, dict) else None
        if call is not None:
            held.append(HeldMessage(tag, call))
    return held


class QueuedWatch:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @staticmethod
    def enter(pipe: Pipeline, job_id: str) -> None:
        """Queue on ``pipe`` (in the job change's atomic write): the job is queued, its message sent now."""
        pipe.zadd(QUEUED, {job_id: time.time()})

    @staticmethod
    def leave(pipe: Pipeline, job_id: str) -> None:
        pipe.zrem(QUEUED, job_id)

    def my_turn(self, every: float) -> bool:
        """True for one caller per ``every`` seconds across all workers: the sweep reads whole queues, so the fleet
        takes turns instead of every worker reading them every pass."""
        return bool(self._redis.set(ORPHAN_GATE, "1", px=max(1, int(every * 1000)), nx=True))

    def stale(self, older_than: float, limit: int = 100) -> list[str]:
        """Ids of jobs queued (or last looked at) more than ``older_than`` seconds ago."""
        cutoff = time.time() - older_than
        return cast(list[str], self._redis.zrangebyscore(QUEUED, "-inf", cutoff, start=0, num=limit))

    def looked_at(self, job_id: str) -> None:
        """The job's message was found (or sent again) now: look again after another period."""
        self._redis.zadd(QUEUED, {job_id: time.time()}, xx=True)

    def drop(self, job_id: str) -> None:
        self._redis.zrem(QUEUED, job_id)

    def without_message(self, jobs: list[tuple[str, Queue]]) -> list[str]:
        """Of ``(job id, its queue)`` pairs, the ids no message names: none waits in the queue, no worker holds
        one. Messages name the job in plain text (the ``kwargsrepr`` header), so a substring test needs no
        decoding; each queue is read once."""
        held = cast(list[str], self._redis.hvals(UNACKED))
        waiting = {queue: cast(list[str], self._redis.lrange(queue.value, 0, -1)) for queue in {q for _, q in jobs}}
        return [
            job_id
            for job_id, queue in jobs
            if not any(job_id in message for message in waiting[queue])
            and not any(job_id in message for message in held)
        ]
