"""The cluster statistics behind ``GET /metrics`` against a real Redis server: counted once in the stores' own
transactions and scripts, whatever races, retries and duplicate deliveries do; zero before anything happened."""

from __future__ import annotations

import time

import pytest
import redis

from tasks import roster, stats
from tasks.batch_store import BatchStore
from tasks.errors import InvalidImageError, MediaFetchError
from tasks.jobs import JobResult, JobStatus, new_job
from tasks.names import JOB_TYPES, Queue
from tasks.pinned_http import PostOutcome
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.store import JobStore
from tests.support.races import race, rec

SPEC = SegmentSpec.model_validate(
    {"type": "segment", "image": {"upload": "upl_abc"}, "webhook": {"url": "https://example.com/hook"}}
)


@pytest.fixture
def store(redis_client: redis.Redis, redis_url: str) -> JobStore:
    return JobStore(redis_client, QueueSettings(redis_url=redis_url, lease_seconds=0.3, max_attempts=3))


def running_now(store: JobStore, ids: list[str]) -> int:
    jobs = [store.get(job_id) for job_id in ids]
    return sum(job is not None and job.status == JobStatus.RUNNING for job in jobs)


def test_an_empty_redis_reads_every_label_at_zero(redis_client: redis.Redis) -> None:
    snap = stats.read(redis_client)
    assert snap.entered == {s.value: 0 for s in JobStatus}
    assert snap.running == dict.fromkeys(JOB_TYPES, 0)
    assert snap.workers == {q.value: 0 for q in Queue}
    assert snap.embeddings == {"memory": 0, "shared": 0, "miss": 0}
    assert snap.batch_items == {"succeeded": 0, "failed": 0, "not_run": 0}
    assert snap.deliveries == {"delivered": 0, "retrying": 0, "gone": 0, "exhausted": 0}
    for histograms in (snap.queue_waits, snap.run_times):
        assert set(histograms) == set(JOB_TYPES)
        assert all(h.count == 0 and h.total == 0 for h in histograms.values())


def test_running_follows_the_records_through_duplicates_retries_and_lost_workers(
    store: JobStore, redis_client: redis.Redis
) -> None:
    jobs = [new_job(SPEC, "t1") for _ in range(12)]
    for job in jobs:
        store.create(job)
    ids = [job.id for job in jobs]
    race(24, lambda n: store.start(ids[n % 12]))  # every job delivered twice at once: one attempt each
    assert stats.read(redis_client).running["segment"] == running_now(store, ids) == 12

    for job_id in ids[:4]:  # transient failures: back to the queue, then started again
        assert store.requeue(job_id, 1, MediaFetchError("flaky"), delay=0)
    assert stats.read(redis_client).running["segment"] == running_now(store, ids) == 8
    for job_id in ids[:4]:
        assert store.start(job_id) is not None

    time.sleep(0.4)  # every lease lapses: the reaper takes them back, races with itself
    race(24, lambda n: store.reap(ids[n % 12]))
    assert stats.read(redis_client).running["segment"] == running_now(store, ids) == 0

    for job_id in ids:
        started = store.start(job_id)
        assert started is not None
        if job_id in ids[:6]:
            store.succeed(job_id, started.attempts, JobResult(files=[], summary={"embedding": "memory"}))
        else:
            store.fail(job_id, started.attempts, InvalidImageError("bad"))
    snap = stats.read(redis_client)
    assert snap.running["segment"] == 0
    assert snap.entered == {"queued": 12 + 4 + 12, "running": 12 + 4 + 12, "succeeded": 6, "failed": 6, "canceled": 0}
    assert snap.queue_waits["segment"].count == 12, "one wait per job: its first attempt's"
    assert snap.run_times["segment"].count == 12
    assert snap.embeddings == {"memory": 6, "shared": 0, "miss": 0}


def test_a_batch_item_recorded_twice_counts_once(batch_store: BatchStore, redis_client: redis.Redis) -> None:
    batch_store.open("job_b", 1, 3, 1, 0)
    race(8, lambda n: batch_store.record("job_b", n % 2, rec("succeeded" if n % 2 else "failed")))
    assert batch_store.record("job_b", 2, rec("succeeded")) == (2, 1)
    assert stats.read(redis_client).batch_items == {"succeeded": 2, "failed": 1, "not_run": 0}


def test_each_delivery_attempt_counts_its_outcome_once(store: JobStore, redis_client: redis.Redis) -> None:
    job = new_job(SPEC, "t1")  # its webhook takes the terminal events
    store.create(job)
    started = store.start(job.id)
    assert started is not None
    store.succeed(job.id, 1, JobResult(files=[], summary={}))
    (event_id,) = store.outbox.claim()
    store.outbox.record(event_id, PostOutcome(status=500, error=None, elapsed_ms=1.0))
    store.outbox.record(event_id, PostOutcome(status=200, error=None, elapsed_ms=1.0))
    assert store.outbox.record(event_id, PostOutcome(status=200, error=None, elapsed_ms=1.0)) is None  # settled
    assert stats.read(redis_client).deliveries == {"delivered": 1, "retrying": 1, "gone": 0, "exhausted": 0}


def test_workers_are_alive_while_they_beat_and_gone_when_they_leave_or_lapse(redis_client: redis.Redis) -> None:
    roster.beat(redis_client, "samq-1@a", [Queue.INTERACTIVE, Queue.SAM3], lapse=30)
    roster.beat(redis_client, "samq-2@b", [Queue.INTERACTIVE], lapse=30)
    roster.beat(redis_client, "samq-3@c", [Queue.IO], lapse=0.2)
    assert stats.read(redis_client).workers == {"interactive": 2, "sam3": 1, "video": 0, "bulk": 0, "io": 1}
    roster.beat(redis_client, "samq-1@a", [Queue.INTERACTIVE, Queue.SAM3], lapse=30)  # a second beat: still one
    roster.leave(redis_client, "samq-2@b", [Queue.INTERACTIVE])
    time.sleep(0.3)  # samq-3 was killed: its beat lapses
    assert stats.read(redis_client).workers == {"interactive": 1, "sam3": 1, "video": 0, "bulk": 0, "io": 0}
    assert roster.lapse_seconds(1) == roster.MIN_LAPSE_SECONDS and roster.lapse_seconds(5) == 15
