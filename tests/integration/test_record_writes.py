"""Compare-and-set writes of job records (``tasks.records``) against a real Redis server: a change applies only to
the record it was computed from, a worker's remembered record saves the read and never outvotes a newer one."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from tasks.broker import celery_app, connect
from tasks.dispatch import CARRIED_RECORD_CHARS, Dispatcher
from tasks.errors import InvalidImageError
from tasks.jobs import JobResult, JobStatus, new_job
from tasks.names import Queue
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
    reads = _counting_reads(monkeypatch)
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


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    read = Records.read

    def counted(self: Records, job_id: str, with_lease: bool = False) -> Snapshot | None:
        reads.append(job_id)
        return read(self, job_id, with_lease)

    monkeypatch.setattr(Records, "read", counted)
    return reads


def test_a_start_on_the_record_its_message_carried_reads_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, api = _stores(redis_url)
    job = new_job(SPEC, "t1")
    api.create(job)
    sent = job.model_dump_json()  # what Dispatcher.enqueue puts in the message
    reads = _counting_reads(monkeypatch)
    started = worker.start(job.id, sent)
    assert reads == []
    assert started is not None and started.status == JobStatus.RUNNING and started.attempts == 1
    assert api.get(job.id) == started
    assert worker.start(job.id, sent) is None, "the same message again (a duplicate delivery): the copy is stale"
    assert reads == [job.id], "a stale copy is not used: the record is read"
    assert worker.succeed(job.id, 1, RESULT)


def test_a_carried_record_never_outvotes_what_happened_since_it_was_sent(redis_url: str) -> None:
    """Canceled while queued, or started by another worker (under a live lease): the copy in the message is stale."""
    worker, api = _stores(redis_url)
    canceled = new_job(SPEC, "t1")
    api.create(canceled)
    sent = canceled.model_dump_json()
    api.request_cancel(canceled.id, "t1")
    assert worker.start(canceled.id, sent) is None
    assert api.get(canceled.id).status == JobStatus.CANCELED  # type: ignore[union-attr]

    taken = new_job(SPEC, "t1")
    api.create(taken)
    sent = taken.model_dump_json()
    assert api.start(taken.id) is not None  # another worker, its lease live
    assert worker.start(taken.id, sent) is None
    current = api.get(taken.id)
    assert current is not None and current.attempts == 1 and current.status == JobStatus.RUNNING


def test_a_job_message_carries_the_record_as_stored_unless_it_is_long(redis_url: str, client: redis.Redis) -> None:
    settings = QueueSettings(redis_url=redis_url)
    store, dispatch = JobStore(client, settings), Dispatcher(celery_app(settings), settings)
    inline = base64.b64encode(b"\xff" * CARRIED_RECORD_CHARS).decode()
    big_spec = SegmentSpec.model_validate({"type": "segment", "image": {"base64": inline}})
    small, big = new_job(SPEC, "t1"), new_job(big_spec, "t1")
    for job in (small, big):
        store.create(job)
        dispatch.enqueue(job)
    carried = []
    for message in reversed(client.lrange(Queue.INTERACTIVE.value, 0, -1)):
        envelope = json.loads(message)
        _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        carried.append(kwargs)
    assert carried[0] == {"job_id": small.id, "record": client.get(job_key(small.id))}
    assert carried[1] == {"job_id": big.id}
