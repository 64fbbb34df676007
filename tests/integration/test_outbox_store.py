"""Idempotent creates, tenant quotas, the webhook outbox and signing secrets, against a real Redis server."""

from __future__ import annotations

import threading
import time

import pytest
import standardwebhooks

from tasks.broker import connect
from tasks.errors import IdempotencyKeyReusedError, InvalidImageError, QuotaExceededError
from tasks.jobs import JobResult, JobStatus, new_job
from tasks.pinned_http import PostOutcome
from tasks.redis_keys import DUE, active_key
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.store import Idempotency, JobStore
from tasks.webhooks import WebhookSecrets, signature

BODY = {"type": "segment", "image": {"upload": "upl_abc"}, "prompts": [{"points": [{"x": 1, "y": 1}]}]}
PLAIN = SegmentSpec.model_validate(BODY)
HOOKED = SegmentSpec.model_validate(
    {**BODY, "webhook": {"url": "https://hooks.example.com/samq", "events": ["job.started", "job.succeeded"]}}
)
RESULT = JobResult(files=[], summary={"instances": 0})


@pytest.fixture
def settings(redis_url: str) -> QueueSettings:
    return QueueSettings(redis_url=redis_url, webhook_retry_schedule="10,20", webhook_claim_seconds=30)


@pytest.fixture
def store(settings: QueueSettings) -> JobStore:
    client = connect(settings)
    client.flushdb()
    return JobStore(client, settings)


def test_fifty_concurrent_creates_with_one_key_make_one_job(store: JobStore) -> None:
    key = Idempotency(key="order-42", body_sha256="a" * 64)
    answers: list[tuple[str, bool]] = []
    barrier = threading.Barrier(50)

    def submit() -> None:
        barrier.wait()
        job, replayed = store.create(new_job(PLAIN, "t1"), idempotency=key)
        answers.append((job.id, replayed))

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _ in answers}) == 1
    assert sum(not replayed for _, replayed in answers) == 1
    jobs, _ = store.list_jobs("t1")
    assert [j.id for j in jobs] == [answers[0][0]]
    assert store.replay("t1", key) is not None
    assert store.replay("t2", key) is None, "keys are per tenant"
    with pytest.raises(IdempotencyKeyReusedError):
        store.create(new_job(PLAIN, "t1"), idempotency=Idempotency(key="order-42", body_sha256="b" * 64))


def test_the_quota_counts_unfinished_jobs_only(store: JobStore) -> None:
    first, _ = store.create(new_job(PLAIN, "t1"), max_active=2)
    second, _ = store.create(new_job(PLAIN, "t1"), max_active=2)
    with pytest.raises(QuotaExceededError) as caught:
        store.create(new_job(PLAIN, "t1"), max_active=2)
    assert (caught.value.active, caught.value.limit) == (2, 2)
    store.create(new_job(PLAIN, "t2"), max_active=2)  # another tenant's budget
    assert store.start(first.id) is not None
    assert store.fail(first.id, 1, InvalidImageError("bad"))
    store.request_cancel(second.id, "t1")
    assert store._redis.get(active_key("t1")) == "0"
    store.create(new_job(PLAIN, "t1"), max_active=2)


def test_status_changes_stage_the_chosen_events_atomically(store: JobStore) -> None:
    plain, _ = store.create(new_job(PLAIN, "t1"))
    store.start(plain.id)
    hooked, _ = store.create(new_job(HOOKED, "t1"))
    assert store.outbox.claim() == []
    store.start(hooked.id)
    store.set_progress(hooked.id, 1, 1, 2, "items")  # job.progress was not chosen: nothing staged
    store.succeed(hooked.id, 1, RESULT)
    claimed = store.outbox.claim()
    events = [store.outbox.load(event_id) for event_id in claimed]
    assert sorted(e.type.value for e in events if e is not None) == ["job.started", "job.succeeded"]
    assert all(e is not None and e.job_id == hooked.id and e.url == HOOKED.webhook.url for e in events)  # type: ignore[union-attr]
    assert store.outbox.claim() == [], "claimed events are not claimed again before their claim lapses"


def test_progress_events_are_at_most_one_a_second(store: JobStore) -> None:
    spec = SegmentSpec.model_validate(
        {**BODY, "webhook": {"url": "https://h.example.com/", "events": ["job.progress"]}}
    )
    job, _ = store.create(new_job(spec, "t1"))
    store.start(job.id)
    for done in range(5):
        store.set_progress(job.id, 1, done, 5, "items")
    assert len(store.outbox.claim()) == 1
    time.sleep(1.1)
    store.set_progress(job.id, 1, 5, 5, "items")
    assert len(store.outbox.claim()) == 1


def test_an_attempt_is_logged_and_rescheduled_until_the_schedule_ends(store: JobStore) -> None:
    job, _ = store.create(new_job(HOOKED, "t1"))
    store.start(job.id)
    (event_id,) = store.outbox.claim()
    failed = store.outbox.record(event_id, PostOutcome(status=500, error=None, elapsed_ms=3.0))
    assert failed is not None and failed.outcome == "retrying" and failed.next_attempt_at is not None
    due_in = store._redis.zscore(DUE, event_id) - time.time()  # type: ignore[operator]
    assert 8 < due_in <= 10, "the first retry waits the first delay of the schedule"
    store.outbox.record(event_id, PostOutcome(status=None, error="connection refused", elapsed_ms=1.0))
    last = store.outbox.record(event_id, PostOutcome(status=503, error=None, elapsed_ms=1.0))
    assert last is not None and last.outcome == "exhausted" and last.next_attempt_at is None
    assert store._redis.zscore(DUE, event_id) is None
    assert store.outbox.record(event_id, PostOutcome(status=200, error=None, elapsed_ms=1.0)) is None
    log = store.outbox.deliveries(job.id)
    assert [(a.attempt, a.status_code, a.outcome) for a in log] == [
        (1, 500, "retrying"),
        (2, None, "retrying"),
        (3, 503, "exhausted"),
    ]
    assert log[1].error == "connection refused"
    assert job.status == JobStatus.QUEUED  # the job itself is never touched by deliveries


def test_410_stops_and_2xx_settles(store: JobStore) -> None:
    job, _ = store.create(new_job(HOOKED, "t1"))
    store.start(job.id)
    store.succeed(job.id, 1, RESULT)
    started, succeeded = sorted(store.outbox.claim(), key=lambda i: store.outbox.load(i).type.value)  # type: ignore[union-attr]
    assert store.outbox.record(started, PostOutcome(status=410, error=None, elapsed_ms=1.0)).outcome == "gone"  # type: ignore[union-attr]
    assert store.outbox.record(succeeded, PostOutcome(status=204, error=None, elapsed_ms=1.0)).outcome == "delivered"  # type: ignore[union-attr]
    assert store._redis.zcard(DUE) == 0
    assert store.get(job.id).status == JobStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_rotated_secret_keeps_signing_during_the_overlap(store: JobStore, settings: QueueSettings) -> None:
    secrets = WebhookSecrets(store._redis, overlap_seconds=1)
    first = secrets.current("t1")
    assert first.startswith("whsec_") and secrets.current("t1") == first, "created once, then stable"
    second, until = secrets.rotate("t1")
    assert until is not None and second != first
    assert secrets.signing("t1") == [second, first]
    body, stamp = b'{"type":"job.succeeded"}', int(time.time())
    header = " ".join(signature(s, "msg_1", stamp, body) for s in secrets.signing("t1"))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": header}
    for secret in (first, second):  # the reference implementation accepts either secret during the overlap
        standardwebhooks.Webhook(secret).verify(body, headers)
    time.sleep(1.1)
    assert secrets.signing("t1") == [second]
    assert secrets.current("t2") != second, "one secret per tenant"
