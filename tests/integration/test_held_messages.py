"""A message taken by a worker killed before its work began (``worker.pipeline.held``): the message sits in Celery's
``unacked`` hash, where only Redis's visibility timeout (hours) would bring it back. The housekeeping pass puts it
back in its queue once it has been held longer than ``SAMQ_ORPHAN_AFTER_SECONDS``, if its job never started (or its
shard was never claimed); work under way is left alone.

The lost worker is a real kombu consumer in its own process: it takes messages as a worker's main process does
(unacknowledged, ``basic_get``), prints their delivery tags and kills itself with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time

import redis

from tasks.batch_specs import BatchSpec
from tasks.batch_store import BatchStore
from tasks.broker import celery_app
from tasks.dispatch import Dispatcher
from tasks.jobs import JobStatus, new_job
from tasks.messages import read_call
from tasks.names import RUN_JOB_TASK, RUN_SHARD_TASK, Queue
from tasks.orphans import UNACKED, held_since
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.store import JobStore
from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack
from worker.pipeline.held import restore_held

SPEC = SegmentSpec.model_validate({"type": "segment", "image": {"upload": "upl_x"}})
BATCH = BatchSpec.model_validate(
    {"type": "batch", "template": {"type": "segment"}, "inputs": {"items": [{"upload": "upl_x"}, {"upload": "upl_y"}]}}
)
TAKE_AND_DIE = """
import os, signal, sys
from tasks.broker import celery_app
from tasks.settings import QueueSettings

redis_url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = celery_app(QueueSettings(redis_url=redis_url))
with app.connection_for_read() as connection:
    channel = connection.default_channel
    for _ in range(count):
        message = channel.basic_get(queue, no_ack=False)  # held: in 'unacked' until acknowledged
        print(message.delivery_tag, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no ack, no restore at shutdown: a worker killed -9
"""


def take_and_die(redis_url: str, queue: Queue, count: int) -> list[str]:
    """Delivery tags of the ``count`` messages a consumer took from ``queue`` before it was killed."""
    done = subprocess.run(
        [sys.executable, "-c", TAKE_AND_DIE, redis_url, queue.value, str(count)], capture_output=True, timeout=60
    )
    assert done.returncode == -9, done.stderr.decode()
    return done.stdout.decode().split()


def test_a_job_whose_worker_died_holding_its_message_runs_within_seconds(bare_stack: Stack) -> None:
    client = bare_stack.client
    job = client.submit(
        {
            "type": "segment",
            "image": {"base64": b64(png_bytes(scene(64, 48)))},
            "prompts": [{"points": [{"x": 9, "y": 9}]}],
        }
    )
    [tag] = take_and_die(bare_stack.redis_url, Queue.INTERACTIVE, 1)
    admin = redis.Redis.from_url(bare_stack.redis_url, decode_responses=True)
    assert admin.hexists(UNACKED, tag) and admin.llen(Queue.INTERACTIVE.value) == 0

    bare_stack.start_worker("interactive", {"SAMQ_ORPHAN_AFTER_SECONDS": "2"})
    started = time.monotonic()
    done = client.wait(job["id"], timeout=120, interval=0.1)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1, "a delivery that never began is no attempt"
    assert time.monotonic() - started < 60, "the message waited for the visibility timeout"
    assert not admin.hexists(UNACKED, tag)


def test_only_messages_whose_work_never_began_are_put_back(redis_url: str, redis_client: redis.Redis) -> None:
    settings = QueueSettings(redis_url=redis_url)
    jobs, dispatch = JobStore(redis_client, settings), Dispatcher(celery_app(settings), settings)
    shards = BatchStore(redis_client, 3600, 30.0)
    queued, started, batch = new_job(SPEC, "t"), new_job(SPEC, "t"), new_job(BATCH, "t")
    for job in (queued, started, batch):
        jobs.create(job)
    dispatch.enqueue(queued)
    dispatch.enqueue(started)
    dispatch.enqueue_shard(batch.id, 0, videos=False)
    dispatch.enqueue_shard(batch.id, 1, videos=False)
    take_and_die(redis_url, Queue.INTERACTIVE, 2)
    take_and_die(redis_url, Queue.BULK, 2)
    assert jobs.start(started.id) is not None  # its (other) worker is alive and began it
    assert shards.claim_shard(batch.id, 1)

    assert held_since(redis_client, 60) == [], "held for less than the grace period: left alone"
    time.sleep(0.2)
    held = held_since(redis_client, 0.1)
    every: list[tuple[str, str, int | None]] = [(RUN_JOB_TASK, queued.id, None), (RUN_JOB_TASK, started.id, None)]
    every += [(RUN_SHARD_TASK, batch.id, 0), (RUN_SHARD_TASK, batch.id, 1)]
    assert sorted((m.call.task, m.call.job_id, m.call.kwargs.get("shard")) for m in held) == sorted(every)
    restored = restore_held(held, jobs, shards, dispatch.restore)

    assert sorted((m.call.job_id, m.call.kwargs.get("shard")) for m in restored) == sorted(
        [(queued.id, None), (batch.id, 0)]
    )
    waiting = [read_call(m) for m in redis_client.lrange(Queue.INTERACTIVE.value, 0, -1)]
    assert [c.job_id for c in waiting if c] == [queued.id]
    waiting = [read_call(m) for m in redis_client.lrange(Queue.BULK.value, 0, -1)]
    assert [(c.job_id, c.kwargs["shard"]) for c in waiting if c] == [(batch.id, 0)]
    still_held = sorted((m.call.job_id, m.call.kwargs.get("shard")) for m in held_since(redis_client, 0))
    assert still_held == sorted([(started.id, None), (batch.id, 1)])
    assert jobs.get(queued.id).status == JobStatus.QUEUED  # type: ignore[union-attr]
