"""The batch reconcile pass against a real Redis: lost shards re-sent once, lost finalizers replaced once, canceled\nand ended batches closed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from tasks.batch_specs import BatchSpec
from tasks.batch_store import BatchStore
from tasks.jobs import Job, JobResult, JobStatus, new_job
from tasks.redis_keys import batch_key
from tasks.settings import QueueSettings
from tasks.store import JobStore
from tests.support.races import LAPSE, race, rec
from worker.pipeline.batch.reconcile import reconcile
from worker.pipeline.context import BatchContext, BatchLimits

BOX = {"x0": 1, "y0": 1, "x1": 20, "y1": 20}
SEGMENT = {"type": "segment", "prompts": [{"box": BOX}]}
TRACK = {"type": "track", "objects": [{"id": 1, "box": BOX}]}
RESULT = JobResult(files=[], summary={"total": 0})


# ---- reconcile ------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    shards: list[tuple[str, int, bool]] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


@pytest.fixture
def jobs(redis_client: redis.Redis, redis_url: str) -> JobStore:
    return JobStore(redis_client, QueueSettings(redis_url=redis_url))


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def ctx(batch_store: BatchStore, sent: Sent) -> BatchContext:
    return BatchContext(
        store=batch_store,
        send_shard=lambda j, s, videos: sent.shards.append((j, s, videos)),
        list_s3=None,
        limits=BatchLimits.from_settings(QueueSettings()),
    )


def reconcile_pass(jobs: JobStore, ctx: BatchContext, sent: Sent) -> None:
    reconcile(jobs, ctx, sent.finalized.append)


def running_batch(jobs: JobStore, batch_store: BatchStore, template: dict[str, Any] = SEGMENT, shards: int = 2) -> Job:
    """A batch job in its first attempt that fanned out ``shards`` shards of 16 items."""
    spec = BatchSpec.model_validate({"type": "batch", "template": template, "inputs": {"items": [{"upload": "upl_a"}]}})
    job = new_job(spec, "t1")
    jobs.create(job)
    started = jobs.start(job.id)
    assert started is not None and started.status == JobStatus.RUNNING and started.attempts == 1
    batch_store.open(job.id, started.attempts, total=shards * 16, shards=shards, max_failures=0)
    return started


def test_reconcile_resends_a_lapsed_shard_once_and_drops_those_of_ended_jobs(
    jobs: JobStore, batch_store: BatchStore, short_batch_store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    images = running_batch(jobs, batch_store, shards=3)
    videos = running_batch(jobs, batch_store, TRACK, shards=3)
    ended = running_batch(jobs, batch_store, shards=3)
    assert jobs.succeed(ended.id, 1, RESULT)
    assert short_batch_store.claim_shard(images.id, 1)
    assert short_batch_store.claim_shard(videos.id, 0)
    assert short_batch_store.claim_shard(ended.id, 2)
    assert short_batch_store.claim_shard("job_expired", 0)  # its job record is gone
    assert batch_store.claim_shard(images.id, 2)  # a live worker

    time.sleep(LAPSE)
    reconcile_pass(jobs, ctx, sent)
    assert sorted(sent.shards) == sorted([(images.id, 1, False), (videos.id, 0, True)])
    assert sent.finalized == []
    assert batch_store.lapsed_shards() == []
    assert batch_store.open_batches() == sorted([images.id, videos.id]), "the ended job's batch is closed"

    reconcile_pass(jobs, ctx, sent)
    assert len(sent.shards) == 2, "a shard is re-sent once"
    assert batch_store.claim_shard(images.id, 1), "the re-sent shard can claim it"
    assert not batch_store.claim_shard(images.id, 2), "the live worker's lease was left alone"


def test_racing_reconcile_passes_resend_once_and_finalize_once(
    jobs: JobStore, batch_store: BatchStore, short_batch_store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    """Every worker runs the reconcile pass on its own timer: passes racing each other still act once."""
    lost_shard = running_batch(jobs, batch_store)
    lost_finalizer = running_batch(jobs, batch_store)
    assert short_batch_store.claim_shard(lost_shard.id, 0)
    assert not batch_store.complete_shard(lost_finalizer.id, 0)
    assert batch_store.complete_shard(lost_finalizer.id, 1)
    time.sleep(LAPSE)

    race(6, lambda _n: reconcile_pass(jobs, ctx, sent))
    assert sent.shards == [(lost_shard.id, 0, False)]
    assert sent.finalized == [lost_finalizer.id]


def test_reconcile_finalizes_a_complete_batch_once_per_nudge_window(
    jobs: JobStore, batch_store: BatchStore, ctx: BatchContext, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.pipeline.batch.reconcile.NUDGE_SECONDS", 1)
    job = running_batch(jobs, batch_store)
    unfinished = running_batch(jobs, batch_store)
    assert not batch_store.complete_shard(job.id, 0)
    assert batch_store.complete_shard(job.id, 1)  # ... and the finalizer died before it claimed the batch
    assert not batch_store.complete_shard(unfinished.id, 0)

    reconcile_pass(jobs, ctx, sent)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id], "two passes in one window send one finalize"
    time.sleep(1.2)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id, job.id], "the next window sends it again (that finalize was lost too)"
    assert sent.shards == []
    assert batch_store.open_batches() == sorted([job.id, unfinished.id])


def test_reconcile_leaves_a_live_finalizer_alone(
    jobs: JobStore, batch_store: BatchStore, short_batch_store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, batch_store, shards=1)
    assert batch_store.complete_shard(job.id, 0)
    assert short_batch_store.claim_finalizer(job.id)

    reconcile_pass(jobs, ctx, sent)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == []

    time.sleep(LAPSE)  # the finalizer died: its claim lapsed
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]


def test_reconcile_finalizes_a_stopped_batch_before_its_shards_are_done(
    jobs: JobStore, batch_store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, batch_store, shards=3)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == []
    batch_store.stop(job.id, "failure_rate")
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]
    assert batch_store.expect(job.id).stop == "failure_rate"


def test_reconcile_stops_and_finalizes_a_canceled_batch(
    jobs: JobStore, batch_store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, batch_store, shards=4)
    assert not batch_store.complete_shard(job.id, 0)
    flagged = jobs.request_cancel(job.id, "t1")
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert batch_store.stopping(job.id) == "canceled", "the shards' checkpoints see the cancel key at once"
    assert batch_store.expect(job.id).stop is None

    reconcile_pass(jobs, ctx, sent)
    assert batch_store.expect(job.id).stop == "canceled"
    assert sent.finalized == [job.id]
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]
    assert batch_store.open_batches() == [job.id], "open until the finalizer ends the job"


def test_reconcile_closes_the_batches_of_ended_jobs(
    jobs: JobStore, batch_store: BatchStore, ctx: BatchContext, sent: Sent, redis_client: redis.Redis
) -> None:
    succeeded = running_batch(jobs, batch_store, shards=1)
    assert batch_store.complete_shard(succeeded.id, 0)
    assert batch_store.record(succeeded.id, 0, rec("succeeded")) == (1, 0)
    batch_store.try_item(succeeded.id, 0)
    assert batch_store.claim_finalizer(succeeded.id)
    assert jobs.succeed(succeeded.id, 1, RESULT)
    batch_store.release_finalizer(succeeded.id)  # the finalizer ended the job but died before it closed the batch
    canceled = running_batch(jobs, batch_store)
    assert jobs.cancel_running(canceled.id, 1)
    running = running_batch(jobs, batch_store)
    batch_store.open("job_expired", 1, total=1, shards=1, max_failures=0)

    reconcile_pass(jobs, ctx, sent)
    assert batch_store.open_batches() == [running.id]
    assert sent.finalized == [] and sent.shards == []
    # Closing drops the bookkeeping but keeps what the API serves.
    assert batch_store.item(succeeded.id, 0) == rec("succeeded")
    assert batch_store.expect(succeeded.id).succeeded == 1
    assert not redis_client.exists(batch_key(succeeded.id) + ":tries")
