"""Delayed retries kept in Redis, not in a message: a job that waits out a transient failure's backoff is a score
in one sorted set, so no worker holds it (a worker killed during the wait, or a Redis restart with AOF, loses
nothing), and every worker's housekeeping pass can send it when it is due.

The entry is written in the same transaction that puts the job back to ``queued`` (``JobStore.requeue``) and
removed by the one that starts its next attempt (or ends the job). Sending is a claim: the due entry's score moves
to the end of a claim window before the message goes out, so if that message is lost (the sender or the worker
that took it died before the attempt started), the entry falls due again and is sent again. A second message for
the same attempt is harmless: ``JobStore.start`` skips a job that is running or ended.
"""

from __future__ import annotations

import time
from typing import cast

import redis
from redis.client import Pipeline

from tasks.redis_keys import RETRIES


class RetrySchedule:
    # Claims due entries atomically: ids whose score is due get a score at the end of the claim window.
    _CLAIM = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
    for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
    return ids
    """

    def __init__(self, client: redis.Redis, claim_seconds: float) -> None:
        self._redis = client
        self._claim_seconds = claim_seconds
        self._claim = client.register_script(self._CLAIM)

    @staticmethod
    def schedule(pipe: Pipeline, job_id: str, delay: float) -> None:
        """Queue the entry on ``pipe`` (in the job change's atomic write): due ``delay`` seconds from now."""
        pipe.zadd(RETRIES, {job_id: time.time() + delay})

    @staticmethod
    def forget(pipe: Pipeline, job_id: str) -> None:
        """Queue the entry's removal on ``pipe``: the job started its attempt, or ended."""
        pipe.zrem(RETRIES, job_id)

    def claim_due(self, limit: int = 100) -> list[str]:
        """Ids of jobs whose retry is due, each claimed for the claim window (send their messages now)."""
        now = time.time()
        return cast(list[str], self._claim(keys=[RETRIES], args=[now, now + self._claim_seconds, limit]))

    def discard(self, job_id: str) -> None:
        """Drop the entry of a job that is not waiting for a retry any more (expired, started, ended)."""
        self._redis.zrem(RETRIES, job_id)

    def due_at(self, job_id: str) -> float | None:
        """When the job's retry is (next) due; None when it is not waiting for one."""
        score = self._redis.zscore(RETRIES, job_id)
        return None if score is None else float(score)
