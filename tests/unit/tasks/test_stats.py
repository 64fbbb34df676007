"""``count_status``: the counter writes queued for each status change, replayed into dictionaries (as Redis would
apply them), so a job's whole life can be checked: queued → running → queued (a retry) → running → succeeded."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any, cast

from redis.client import Pipeline

from tasks.jobs import Job, JobResult, JobStatus, new_job
from tasks.redis_keys import BATCH_ITEMS, EMBEDDINGS, ENTERED, RUNNING, queue_wait_key, runtime_key
from tasks.specs import SegmentSpec
from tasks.stats import QUEUE_WAIT_BUCKETS, RUNTIME_BUCKETS, Histogram, count_status


class Hashes:
    """Stands in for the pipeline: applies ``hincrby`` and ``hincrbyfloat`` to in-memory hashes."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.data[key][field] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.data[key][field] += amount

    def histogram(self, key: str, bounds: tuple[float, ...]) -> Histogram:
        fields = {name: str(int(v)) if name != "sum" else str(v) for name, v in self.data[key].items()}
        return Histogram.from_hash(fields, bounds)

    def move(self, job: Job, to: JobStatus, **changes: Any) -> None:
        before = job.status
        job.status = to
        for name, value in changes.items():
            setattr(job, name, value)
        count_status(cast(Pipeline, self), job, before)


def segment_job() -> Job:
    return new_job(SegmentSpec.model_validate({"type": "segment", "image": {"image_id": "a" * 64}}), "acme")


def test_a_retried_job_runs_once_at_a_time_and_waits_once() -> None:
    redis = Hashes()
    job = segment_job()
    t0 = job.created_at
    redis.move(job, JobStatus.RUNNING, started_at=t0 + timedelta(seconds=0.3), attempts=1)
    assert redis.data[RUNNING]["segment"] == 1
    redis.move(job, JobStatus.QUEUED)  # a transient failure: back in the queue
    assert redis.data[RUNNING]["segment"] == 0
    redis.move(job, JobStatus.RUNNING, started_at=t0 + timedelta(seconds=40), attempts=2)
    assert redis.data[RUNNING]["segment"] == 1
    result = JobResult(files=[], summary={"instances": 1, "embedding": "shared"})
    redis.move(job, JobStatus.SUCCEEDED, finished_at=t0 + timedelta(seconds=42), result=result)

    assert redis.data[RUNNING]["segment"] == 0
    assert dict(redis.data[ENTERED]) == {"running": 2, "queued": 1, "succeeded": 1}
    wait = redis.histogram(queue_wait_key("segment"), QUEUE_WAIT_BUCKETS)
    assert wait.count == 1, "only the first attempt's wait counts (a retry's would hold its first run)"
    assert abs(wait.total - 0.3) < 1e-9
    assert [n for bound, n in wait.buckets if bound < 0.3] == [0] * 5 and dict(wait.buckets)[0.5] == 1
    run = redis.histogram(runtime_key("segment"), RUNTIME_BUCKETS)
    assert (run.count, run.total) == (1, 2.0), "the run time is the last attempt's"
    assert dict(redis.data[EMBEDDINGS]) == {"shared": 1}


def test_a_job_canceled_while_queued_never_counted_as_running() -> None:
    redis = Hashes()
    job = segment_job()
    redis.move(job, JobStatus.CANCELED, finished_at=job.created_at + timedelta(seconds=1))
    assert redis.data[RUNNING]["segment"] == 0
    assert redis.histogram(runtime_key("segment"), RUNTIME_BUCKETS).count == 0
    assert redis.histogram(queue_wait_key("segment"), QUEUE_WAIT_BUCKETS).count == 0
    assert dict(redis.data[ENTERED]) == {"canceled": 1}


def test_a_stopped_batch_counts_its_items_that_never_ran_and_no_embedding() -> None:
    redis = Hashes()
    job = segment_job()
    job.type = "batch"
    redis.move(job, JobStatus.RUNNING, started_at=job.created_at, attempts=1)
    summary = {"total": 4, "succeeded": 2, "failed": 1, "not_run": 1, "embedding": "miss"}
    redis.move(job, JobStatus.FAILED, finished_at=job.created_at, result=JobResult(files=[], summary=summary))
    assert dict(redis.data[BATCH_ITEMS]) == {"not_run": 1}, "succeeded and failed items count as they are recorded"
    assert EMBEDDINGS not in redis.data
    assert redis.data[RUNNING]["batch"] == 0


def test_histograms_read_every_bound_at_zero_when_nothing_was_observed() -> None:
    empty = Histogram.from_hash({}, QUEUE_WAIT_BUCKETS)
    assert [bound for bound, _ in empty.buckets] == list(QUEUE_WAIT_BUCKETS)
    assert (empty.count, empty.total) == (0, 0.0)
