"""The job store's state machine, leases and fencing against a real Redis server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tasks.broker import connect
from tasks.errors import IllegalTransitionError, InvalidCursorError, InvalidImageError, MediaFetchError
from tasks.jobs import JobResult, JobStatus, new_job
from tasks.names import Queue
from tasks.redis_keys import events_channel
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.store import JobStore

SPEC = SegmentSpec.model_validate(
    {"type": "segment", "image": {"upload": "upl_abc"}, "prompts": [{"points": [{"x": 1, "y": 1}]}]}
)
RESULT = JobResult(files=[], summary={"instances": 0})


@pytest.fixture
def store(redis_url: str) -> JobStore:
    settings = QueueSettings(redis_url=redis_url, lease_seconds=0.5, max_attempts=2)
    client = connect(settings)
    client.flushdb()
    return JobStore(client, settings)


def test_a_job_runs_once_and_terminal_states_never_change(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    started = store.start(job.id)
    assert started is not None and started.status == JobStatus.RUNNING and started.attempts == 1
    assert store.start(job.id) is None, "a duplicate delivery must not start a second attempt under a live lease"
    assert store.succeed(job.id, 1, RESULT)
    assert store.get(job.id).status == JobStatus.SUCCEEDED  # type: ignore[union-attr]
    assert not store.fail(job.id, 1, InvalidImageError("late"))
    assert store.start(job.id) is None
    with pytest.raises(IllegalTransitionError):
        store.request_cancel(job.id, "t1")
    assert store.get(job.id).status == JobStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_lapsed_lease_is_reaped_and_the_stale_attempt_is_fenced(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    assert store.start(job.id) is not None
    assert store.lapsed() == []
    time.sleep(0.6)
    assert store.lapsed() == [job.id]
    requeued = store.reap(job.id)
    assert requeued is not None and requeued.status == JobStatus.QUEUED
    assert requeued.error is not None and requeued.error.code == "worker_lost"
    second = store.start(job.id)
    assert second is not None and second.attempts == 2
    # The first attempt was only presumed dead: every write it tries now is refused.
    assert not store.heartbeat(job.id, 1)
    assert not store.succeed(job.id, 1, RESULT)
    assert not store.set_progress(job.id, 1, 1, 1, "images")
    assert store.heartbeat(job.id, 2)
    assert store.succeed(job.id, 2, RESULT)
    final = store.get(job.id)
    assert final is not None and final.status == JobStatus.SUCCEEDED and final.attempts == 2 and final.error is None


def test_out_of_attempts_fails_with_worker_lost(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    for _ in range(2):
        assert store.start(job.id) is not None
        time.sleep(0.6)
        store.reap(job.id)
    final = store.get(job.id)
    assert final is not None and final.status == JobStatus.FAILED
    assert final.error is not None and final.error.code == "worker_lost"
    assert store.lapsed() == []


def test_renewed_lease_is_not_reaped(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    store.start(job.id)
    for _ in range(4):
        time.sleep(0.2)
        assert store.heartbeat(job.id, 1)
    assert store.reap(job.id) is None
    assert store.get(job.id).status == JobStatus.RUNNING  # type: ignore[union-attr]


def test_transient_failure_requeues_keeping_the_error(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    store.start(job.id)
    before = time.time()
    assert store.requeue(job.id, 1, MediaFetchError("timeout"), 30.0)
    queued = store.get(job.id)
    assert queued is not None and queued.status == JobStatus.QUEUED and queued.error is not None
    assert queued.error.retryable
    due = store.retries.due_at(job.id)  # the retry waits in the store, not in a message
    assert due is not None and before + 30 <= due <= time.time() + 30
    assert store.retries.claim_due() == []  # not due yet


def test_a_due_retry_is_claimed_once_sent_again_if_it_never_starts_and_forgotten_when_it_does(redis_url: str) -> None:
    settings = QueueSettings(redis_url=redis_url, retry_claim_seconds=0.3)
    store = JobStore(connect(settings), settings)
    job = new_job(SPEC, "t1")
    store.create(job)
    store.start(job.id)
    store.requeue(job.id, 1, MediaFetchError("timeout"), 0.0)
    assert store.retries.claim_due() == [job.id]
    assert store.retries.claim_due() == []  # claimed: another housekeeper does not send it too
    time.sleep(0.4)
    assert store.retries.claim_due() == [job.id]  # its message never started the attempt: due again
    assert store.start(job.id) is not None
    assert store.retries.due_at(job.id) is None  # the attempt started: nothing is waiting any more
    store.requeue(job.id, 2, MediaFetchError("timeout"), 60.0)
    assert store.request_cancel(job.id, "t1") is not None  # canceled while waiting: the entry goes with it
    assert store.retries.due_at(job.id) is None


def test_cancel_queued_is_immediate_and_running_is_flagged(store: JobStore) -> None:
    queued, running = new_job(SPEC, "t1"), new_job(SPEC, "t1")
    store.create(queued)
    store.create(running)
    store.start(running.id)
    assert store.request_cancel(queued.id, "t1").status == JobStatus.CANCELED  # type: ignore[union-attr]
    assert store.start(queued.id) is None
    flagged = store.request_cancel(running.id, "t1")
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert store.cancel_running(running.id, 1)
    assert store.get(running.id).status == JobStatus.CANCELED  # type: ignore[union-attr]
    assert store.request_cancel(running.id, "another-tenant") is None


def test_tenants_only_see_their_own_jobs(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    assert store.get(job.id, "t1") is not None
    assert store.get(job.id, "t2") is None
    assert store.list_jobs("t2") == ([], None)


def test_listing_pages_newest_first_with_filters(store: JobStore) -> None:
    ids = []
    for _ in range(7):
        job = new_job(SPEC, "t1")
        store.create(job)
        ids.append(job.id)
        time.sleep(0.002)
    store.start(ids[3])
    pages, cursor = [], None
    while True:
        page, cursor = store.list_jobs("t1", limit=3, cursor=cursor)
        pages.append([j.id for j in page])
        if cursor is None:
            break
    assert [i for p in pages for i in p] == ids[::-1]
    running, _ = store.list_jobs("t1", status=JobStatus.RUNNING)
    assert [j.id for j in running] == [ids[3]]
    for forged in ("nan", "inf", "1e9", "!!", "-1"):  # Redis refuses "nan" as a bound; the rest is not a cursor
        with pytest.raises(InvalidCursorError):
            store.list_jobs("t1", cursor=forged)


def test_wait_terminal_wakes_on_the_transition(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    store.start(job.id)
    threading.Timer(0.3, lambda: store.succeed(job.id, 1, RESULT)).start()
    started = time.monotonic()
    finished = store.wait_terminal(job.id, timeout=10)
    assert finished is not None and finished.status == JobStatus.SUCCEEDED
    assert time.monotonic() - started < 2


def test_concurrent_starts_yield_exactly_one_attempt(store: JobStore, tmp_path: Path) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    winners: list[int] = []
    threads = [threading.Thread(target=lambda: winners.append(1) if store.start(job.id) else None) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.get(job.id).attempts == 1  # type: ignore[union-attr]


def test_queued_jobs_are_watched_until_they_start_and_a_missing_message_is_found(store: JobStore) -> None:
    job = new_job(SPEC, "t1")
    store.create(job)
    assert store.queued.stale(older_than=-1) == [job.id]
    broker = connect(QueueSettings(redis_url=store._settings.redis_url))
    broker.rpush("interactive", json.dumps({"headers": {"kwargsrepr": repr({"job_id": job.id})}}))
    assert store.queued.without_message([(job.id, Queue.INTERACTIVE)]) == []  # its message waits
    broker.delete("interactive")
    broker.hset("unacked", "tag-1", json.dumps([{"headers": {"kwargsrepr": repr({"job_id": job.id})}}]))
    assert store.queued.without_message([(job.id, Queue.INTERACTIVE)]) == []  # a worker holds it
    broker.delete("unacked")
    assert store.queued.without_message([(job.id, Queue.INTERACTIVE)]) == [job.id]  # gone
    assert store.queued.my_turn(60) and not store.queued.my_turn(60)  # one sweeper per period
    store.start(job.id)
    assert store.queued.stale(older_than=-1) == []


def test_waits_reuse_their_redis_connections_and_read_only_their_own_jobs_messages(
    store: JobStore, redis_url: str
) -> None:
    """A wait leaves its subscription for the next (redis-py's close would disconnect it: a new connection per wait);
    a message still buffered from the job an earlier wait watched does not end a later wait on another job."""
    admin = connect(QueueSettings(redis_url=redis_url))

    def connections() -> int:
        return int(admin.info("stats")["total_connections_received"])

    def finished_job() -> str:
        job = new_job(SPEC, "t1")
        store.create(job)
        store.start(job.id)
        threading.Timer(0.05, lambda: store.succeed(job.id, 1, RESULT)).start()
        return job.id

    first = finished_job()
    assert store.wait_terminal(first, timeout=10).status == JobStatus.SUCCEEDED  # type: ignore[union-attr]
    before = connections()
    for _ in range(20):
        job_id = finished_job()
        done = store.wait_terminal(job_id, timeout=10)
        assert done is not None and done.id == job_id and done.status == JobStatus.SUCCEEDED
    opened = connections() - before  # the pool may still grow once or twice (the timer thread's writes meanwhile)
    assert opened <= 3, f"20 waits opened {opened} Redis connections: one per wait"

    late = new_job(SPEC, "t1")
    store.create(late)
    store.start(late.id)
    with store._subscriptions.subscribed(events_channel(late.id)):
        assert store.succeed(late.id, 1, RESULT)  # published to this subscription, left unread in it
    running = new_job(SPEC, "t1")
    store.create(running)
    store.start(running.id)
    waited = store.wait_terminal(running.id, timeout=0.5)
    assert waited is not None and waited.id == running.id and waited.status == JobStatus.RUNNING


def test_a_watch_begun_before_the_job_exists_misses_nothing_and_reads_nothing(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = new_job(SPEC, "t1")
    with store.watching(job.id) as watch:
        store.create(job)
        store.start(job.id)
        assert store.succeed(job.id, 1, RESULT)  # ended before anyone waits: its message waits in the subscription
        reads: list[str] = []
        monkeypatch.setattr(JobStore, "get", lambda self, job_id, tenant=None: reads.append(job_id))
        started = time.monotonic()
        done = watch.wait(10, known=job)
    assert done is not None and done.id == job.id and done.status == JobStatus.SUCCEEDED
    assert reads == [] and time.monotonic() - started < 2
