"""Webhooks per the Standard Webhooks spec, delivered at least once from a durable outbox in Redis.

- An event is *staged* inside the same Redis transaction that changes the job (``JobStore``), so a status change
  and its event are written together or not at all.
- Staged events sit in a sorted set scored by their next attempt time. Every worker's main process claims due
  events (an atomic script pushes their score past a claim window) and sends one short Celery task per event to
  the ``io`` queue. No Celery countdown is ever used: a retry is just a later score, so the schedule survives worker
  and Redis restarts (AOF) and can span days without touching the broker's visibility timeout.
- The delivery task signs and POSTs the event, appends the attempt to the job's delivery log, and reschedules it
  (growing delays), or ends it: 2xx delivered, 410 gone, schedule exhausted. A worker that dies mid-delivery leaves
  the claim to lapse, and the event is sent again with the same ``webhook-id``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Literal, cast

import redis
from pydantic import Field
from redis.client import Pipeline

from tasks.jobs import Job, JobStatus, Record, new_id, utcnow
from tasks.pinned_http import PostOutcome
from tasks.redis_keys import DELIVERIES, DUE, event_key, log_key, progress_gate_key, secret_key
from tasks.settings import QueueSettings
from tasks.specs import WebhookEvent
from tasks.views import Timestamp

SECRET_PREFIX = "whsec_"
MAX_LOG_ENTRIES = 500
EVENT_BY_STATUS = {
    JobStatus.RUNNING: WebhookEvent.STARTED,
    JobStatus.SUCCEEDED: WebhookEvent.SUCCEEDED,
    JobStatus.FAILED: WebhookEvent.FAILED,
    JobStatus.CANCELED: WebhookEvent.CANCELED,
}
DeliveryOutcome = Literal["delivered", "retrying", "gone", "exhausted"]


class OutboxEvent(Record):
    """One event for one job's webhook; ``id`` is the ``webhook-id`` of every attempt."""

    id: str
    tenant: str
    job_id: str
    url: str
    type: WebhookEvent
    timestamp: datetime
    job: str
    """The job record as it was when the event happened (JSON); rendered into the body at each attempt."""
    attempts: int = 0
    state: Literal["pending", "delivered", "gone", "exhausted"] = "pending"


class DeliveryAttempt(Record):
    """One line of ``GET /v1/jobs/{id}/deliveries``."""

    event_id: str
    type: WebhookEvent
    attempt: int
    at: Timestamp
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: DeliveryOutcome
    next_attempt_at: Timestamp | None = Field(default=None)


def wants(job: Job, event: WebhookEvent) -> bool:
    webhook = job.spec.webhook
    return webhook is not None and event in webhook.events


class Outbox:
    """Staged events, their schedule and the per-job delivery log."""

    # Claims due events atomically: ids whose score is due get a score at the end of the claim window.
    _CLAIM = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
    for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
    return ids
    """

    def __init__(self, client: redis.Redis, settings: QueueSettings) -> None:
        self._redis = client
        self._settings = settings
        self._claim = client.register_script(self._CLAIM)
        delays = settings.webhook_delays
        self._event_ttl = int(sum(delays) + settings.webhook_claim_seconds + 24 * 3600)

    def stage(self, pipe: Pipeline, job: Job, event: WebhookEvent) -> None:
        """Queue the event's writes on ``pipe`` (in the job change's atomic write). Due at once."""
        webhook = job.spec.webhook
        assert webhook is not None
        staged = OutboxEvent(
            id=new_id("msg"),
            tenant=job.tenant,
            job_id=job.id,
            url=webhook.url,
            type=event,
            timestamp=utcnow(),
            job=job.model_dump_json(),
        )
        pipe.set(event_key(staged.id), staged.model_dump_json(), ex=self._event_ttl)
        pipe.zadd(DUE, {staged.id: time.time()})

    def progress_gate(self, job_id: str) -> bool:
        """True at most once a second per job: whether a ``job.progress`` event may be staged now."""
        return bool(self._redis.set(progress_gate_key(job_id), "1", px=1000, nx=True))

    def claim(self, limit: int = 100) -> list[str]:
        now = time.time()
        return cast(list[str], self._claim(keys=[DUE], args=[now, now + self._settings.webhook_claim_seconds, limit]))

    def load(self, event_id: str) -> OutboxEvent | None:
        raw = self._redis.get(event_key(event_id))
        return OutboxEvent.model_validate_json(raw) if raw is not None else None

    def record(self, event_id: str, outcome: PostOutcome) -> DeliveryAttempt | None:
        """Log one attempt and decide what follows. None when the event is gone or already settled."""
        delays = self._settings.webhook_delays
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(event_key(event_id))  # type: ignore[no-untyped-call]
                    raw = pipe.get(event_key(event_id))
                    if raw is None:
                        pipe.unwatch()
                        return None
                    event = OutboxEvent.model_validate_json(raw)
                    if event.state != "pending":  # a duplicate attempt (a lapsed claim) after the event settled
                        pipe.unwatch()
                        return None
                    event.attempts += 1
                    attempt = _attempt(event, outcome, delays)
                    event.state = "pending" if attempt.outcome == "retrying" else attempt.outcome
                    pipe.multi()
                    pipe.set(event_key(event_id), event.model_dump_json(), keepttl=True)
                    if attempt.next_attempt_at is not None:
                        pipe.zadd(DUE, {event_id: attempt.next_attempt_at.timestamp()})
                    else:
                        pipe.zrem(DUE, event_id)
                    pipe.rpush(log_key(event.job_id), attempt.model_dump_json())
                    pipe.ltrim(log_key(event.job_id), -MAX_LOG_ENTRIES, -1)
                    pipe.expire(log_key(event.job_id), self._settings.job_ttl_seconds)
                    pipe.hincrby(DELIVERIES, attempt.outcome, 1)  # samq_webhook_deliveries_total
                    pipe.execute()
                    return attempt
                except redis.WatchError:
                    continue

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        raw = cast(list[str], self._redis.lrange(log_key(job_id), 0, -1))
        return [DeliveryAttempt.model_validate_json(line) for line in raw]


def _attempt(event: OutboxEvent, outcome: PostOutcome, delays: tuple[float, ...]) -> DeliveryAttempt:
    next_at = None
    result: DeliveryOutcome
    if outcome.status is not None and 200 <= outcome.status < 300:
        result = "delivered"
    elif outcome.status == 410:
        result = "gone"
    elif event.attempts > len(delays):
        result = "exhausted"
    else:
        result = "retrying"
        next_at = datetime.fromtimestamp(time.time() + delays[event.attempts - 1], tz=UTC)
    return DeliveryAttempt(
        event_id=event.id,
        type=event.type,
        attempt=event.attempts,
        at=utcnow(),
        status_code=outcome.status,
        error=outcome.error,
        duration_ms=round(outcome.elapsed_ms, 1),
        outcome=result,
        next_attempt_at=next_at,
    )


class WebhookSecrets:
    """One ``whsec_`` secret per tenant, created on first use; a rotation keeps the previous one signing for an
    overlap period, so receivers can switch without dropping events."""

    def __init__(self, client: redis.Redis, overlap_seconds: int) -> None:
        self._redis = client
        self._overlap = overlap_seconds

    def current(self, tenant: str) -> str:
        self._redis.hsetnx(secret_key(tenant), "current", _new_secret())
        return cast(str, self._redis.hget(secret_key(tenant), "current"))

    def rotate(self, tenant: str) -> tuple[str, datetime | None]:
        """A new current secret; returns it and until when the previous one still signs (None: there was none)."""
        secret = _new_secret()
        key = secret_key(tenant)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    previous = pipe.hget(key, "current")
                    until = time.time() + self._overlap
                    pipe.multi()
                    pipe.hset(key, "current", secret)
                    if previous is not None:
                        pipe.hset(key, mapping={"previous": previous, "previous_until": repr(until)})
                    pipe.execute()
                    return secret, datetime.fromtimestamp(until, tz=UTC) if previous is not None else None
                except redis.WatchError:
                    continue

    def signing(self, tenant: str) -> list[str]:
        """The secrets that sign right now: the current one, and the previous one during its overlap."""
        current, previous, until = cast(
            list[str | None], self._redis.hmget(secret_key(tenant), ["current", "previous", "previous_until"])
        )
        found = [current or self.current(tenant)]
        if previous is not None and until is not None and float(until) > time.time():
            found.append(previous)
        return found


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed by the secret's base64 part."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
