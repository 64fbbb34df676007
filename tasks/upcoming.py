"""The jobs next in a queue: what a worker reads ahead for while it computes (``worker.pipeline.overlap``).

Celery's Redis transport keeps a queue as a Redis list: producers ``LPUSH``, workers ``BRPOP``, so the next message is
the list's last element. A message is Celery's protocol 2 in JSON: the task's name in ``headers.task``, and the body
(base64 JSON) ``[args, kwargs, options]``. Peeking takes nothing: another worker may still take the job, and the
read-ahead then only cost its round trip.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import redis

from tasks.names import RUN_JOB_TASK, Queue


def upcoming_jobs(client: redis.Redis, queue: Queue, count: int = 1) -> list[str]:
    """Ids of the jobs whose ``run_job`` messages are the next ``count`` in ``queue``, next first."""
    messages: list[str | bytes] = client.lrange(queue.value, -count, -1)
    ids = (_job_id(message) for message in reversed(messages))
    return [job_id for job_id in ids if job_id is not None]


def _job_id(message: str | bytes) -> str | None:
    """The job a ``run_job`` message names; None for other tasks and for anything unreadable."""
    try:
        envelope: dict[str, Any] = json.loads(message)
        if envelope.get("headers", {}).get("task") != RUN_JOB_TASK:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, *_ = json.loads(body)
        job_id = kwargs.get("job_id") if kwargs else (args[0] if args else None)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
    return job_id if isinstance(job_id, str) else None
