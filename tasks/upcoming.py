"""The jobs next in a queue: what a worker reads ahead for while it computes (``worker.pipeline.overlap``).

Workers take a queue's messages from the end of its Redis list (``tasks.messages``), so the next message is the list's
last element. Peeking takes nothing: another worker may still take the job, and the read-ahead then only cost its
round trip.
"""

from __future__ import annotations

import redis

from tasks.messages import read_call
from tasks.names import RUN_JOB_TASK, Queue


def upcoming_jobs(client: redis.Redis, queue: Queue, count: int = 1) -> list[str]:
    """Ids of the jobs whose ``run_job`` messages are the next ``count`` in ``queue``, next first."""
    messages: list[str | bytes] = client.lrange(queue.value, -count, -1)
    calls = (read_call(message) for message in reversed(messages))
    return [call.job_id for call in calls if call is not None and call.task == RUN_JOB_TASK and call.job_id]
