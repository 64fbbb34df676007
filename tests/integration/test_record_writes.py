"""Compare-and-set writes of job records (``tasks.records``) against a real Redis server: a change applies only to
the record it was computed from, a worker's remembered record saves the read and never outvotes a newer one."""

from __future__ import annotations

import time

import pytest
import redis

from tasks.broker import connect
from tasks.errors import InvalidImageError
from tasks.jobs import JobResult, JobStatus, new_job
from tasks.records import Records, Snapshot
from tasks.redis_keys import LEASES, job_key
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.store import JobStore

SPEC = SegmentSpec.model_validate(
    {"type": "segment", "image": {"upload": "upl_abc"}, "prompts": [{"points": [{"x": 1, "y": 1}]}]}
)
RESULT = JobResult(files=[], summary={"instances": 0})
MARK = "samq:test:mark"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    settings = QueueSettings(redis_url=redis_url)
    client = connect(settings)
    client.flushdb()
    return client


def _stores(redis_url: str, lease_seconds: float = 30.0) -> tuple[JobStore, JobStore]:
    """Two processes' stores on one Redis: a worker's and the API's (or the reaper's)."""
    settings = QueueSettings(redis_url=redis_url, lease_seconds=lease_seconds)
    return JobStore(connect(settings), settings), JobStore(connect(settings), settings)


def test_a_change_applies_only_to_the_record_it_was_computed_from(client: redis.Redis) -> None:
    records = Records(client)
    client.set(job_key("job_1"), '{"v": 1}')
    seen = records.read("job_1")
    assert seen is not None
    client.set(job_key("job_1"), '{"v": 2}')  # another process's write in between
    with records.writes() as pipe:
        pipe.set(job_key("job_1"), '{"v": 3}')
        pipe.set(MARK, "1")
        assert not records.commit("job_1", seen, '{"v": 3}', pipe)
    assert client.get(job_key("job_1")) == '{"v": 2}' and client.get(MARK) is None
    fresh = records.read("job_1")
    assert fresh is not None
    with records.writes() as pipe:
        pipe.set(job_key("job_1"), '{"v": 3}')
        pipe.hincrby(MARK + ":h", "n", 2)
        pipe.zadd(MARK + ":z", {"member": 1.5})
        assert records.commit("job_1", fresh, '{"v": 3}', pipe)
    assert client.get(job_key("job_1")) == '{"v": 3}'
    assert client.hget(MARK + ":h", "n") == "2" and client.zscore(MARK + ":z", "member") == 1.5


@pytest.mark.parametrize("live_at_read", [True, False])
def test_a_change_that_read_the_lease_applies_only_while_the_lease_is_as_it_was(
    client: redis.Redis, live_at_read: bool
) -> None:
    records = Records(client)
    client.set(job_key("job_1"), '{"v": 1}')
    if live_at_read:
        client.zadd(LEASES, {"job_1": time.time() + 30})
    seen = records.read("job_1", with_lease=True)
    assert seen is not None and seen.lease_live is live_at_read
    if live_at_read:
        client.zrem(LEASES, "job_1")  # the lease ended (the attempt finished, or the reaper took it)
    else:
        client.zadd(LEASES, {"job_1": time.time() + 30})  # another worker started it
    with records.writes() as pipe:
        pipe.set(MARK, "1")
        assert not records.commit("job_1", seen, '{"v": 1}', pipe)
    assert client.get(MARK) is None
    client.zadd(LEASES, {"job_1": time.time() + 60 if live_at_read else time.time() - 1})  # renewed / lapsed
    with records.writes() as pipe:
        pipe.set(MARK, "1")
        assert records.commit("job_1", seen, '{"v": 1}', pipe), "renewed or lapsed, the lease is as live as it was"


def test_a_worker_finishes_its_job_without_reading_the_record_it_wrote(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, _ = _stores(redis_url)
    job = new_job(SPEC, "t1")
    worker.create(job)
    assert worker.start(job.id) is not None
    reads: list[str] = []
    read = Records.read

    def counted(self: Records, job_id: str, with_lease: bool = False) -> Snapshot | None:
        reads.append(job_id)
        return read(self, job_id, with_lease)

    monkeypatch.setattr(Records, "read", counted)
    assert worker.succeed(job.id, 1, RESULT)
    assert reads == []
    done = worker.get(job.id)
    assert done is not None and done.status == JobStatus.SUCCEEDED and done.result == RESULT


def test_a_cancel_request_in_between_is_read_and_kept_by_the_next_change(redis_url: str) -> None:
    worker, api = _stores(redis_url)
    job = new_job(SPEC, "t1")
    worker.create(job)
    assert worker.start(job.id) is not None
    flagged = api.request_cancel(job.id, "t1")
    assert flagged is not None and flagged.cancel_requested and flagged.status == JobStatus.RUNNING
    assert worker.set_progress(job.id, 1, 1, 2, "frames") is not None  # computed on the remembered record first
    assert worker.cancel_requested(job.id)
    current = worker.get(job.id)
    assert current is not None and current.cancel_requested and current.progress.done == 1
    assert worker.cancel_running(job.id, 1)
    assert api.get(job.id).status == JobStatus.CANCELED  # type: ignore[union-attr]


def test_a_remembered_running_record_never_outvotes_the_reaper(redis_url: str) -> None:
    """The worker remembers its job running; the reaper takes it back meanwhile: the old attempt is fenced off."""
    worker, reaper = _stores(redis_url, lease_seconds=0.3)
    job = new_job(SPEC, "t1")
    worker.create(job)
    assert worker.start(job.id) is not None
    time.sleep(0.4)
    assert reaper.reap(job.id) is not None
    assert not worker.succeed(job.id, 1, RESULT)
    assert not worker.fail(job.id, 1, InvalidImageError("late"))
    back = reaper.get(job.id)
    assert back is not None and back.status == JobStatus.QUEUED and back.result is None
    second = reaper.start(job.id)
    assert second is not None and second.attempts == 2
    assert reaper.succeed(job.id, 2, RESULT)
