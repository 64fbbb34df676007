"""The jobs next in a queue (``tasks.upcoming``), read from messages Celery itself sent to a real Redis."""

from __future__ import annotations

import redis

from tasks.broker import celery_app
from tasks.dispatch import Dispatcher
from tasks.jobs import new_job
from tasks.names import Queue
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.upcoming import upcoming_jobs

SPEC = SegmentSpec.model_validate({"type": "segment", "image": {"upload": "upl_x"}})


def test_the_next_run_job_messages_name_their_jobs_next_first(redis_url: str, redis_client: redis.Redis) -> None:
    settings = QueueSettings(redis_url=redis_url)
    dispatch = Dispatcher(celery_app(settings), settings)
    first, second = new_job(SPEC, "t"), new_job(SPEC, "t")
    redis_client.delete(Queue.INTERACTIVE.value, Queue.BULK.value)
    assert upcoming_jobs(redis_client, Queue.INTERACTIVE) == []
    dispatch.enqueue(first)
    dispatch.enqueue(second)
    redis_client.lpush(Queue.INTERACTIVE.value, "not a message")  # unreadable: skipped, never an error
    assert upcoming_jobs(redis_client, Queue.INTERACTIVE) == [first.id]
    assert upcoming_jobs(redis_client, Queue.INTERACTIVE, count=3) == [first.id, second.id]
    dispatch.enqueue_shard(first.id, 0, videos=False)  # another task: not a job to read ahead for
    assert upcoming_jobs(redis_client, Queue.BULK) == []
    redis_client.delete(Queue.INTERACTIVE.value, Queue.BULK.value)
