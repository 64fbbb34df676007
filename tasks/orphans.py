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
"""

from __future__ import annotations

import time
from typing import cast

import redis
from redis.client import Pipeline

from tasks.names import Queue
from tasks.redis_keys import ORPHAN_GATE, QUEUED

UNACKED = "unacked"
"""Celery's Redis transport: the hash of the messages workers hold (delivery tag → message)."""


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
