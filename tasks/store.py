"""The job store: job records in Redis, applied through the state machine of ``tasks.jobs``.

Every change is an optimistic transaction on the job's key (a compare-and-set, ``tasks.records``), so two workers,
the reaper and the API can race without ever regressing a status. Workers hold a lease per running job; each start bumps ``attempts``, and
every write from a worker names its attempt, so a stale (zombie) attempt is fenced off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import redis
from redis.client import Pipeline

from tasks.cursors import decode_cursor, encode_cursor
from tasks.errors import (
    IdempotencyKeyReusedError,
    JobNotCancelableError,
    QuotaExceededError,
    SamqError,
    WorkerLostError,
)
from tasks.jobs import Job, JobError, JobResult, JobStatus, utcnow
from tasks.orphans import QueuedWatch
from tasks.records import Records
from tasks.redis_keys import (
    ENTERED,
    LEASES,
    QUEUED,
    active_key,
    cancel_key,
    events_channel,
    idempotency_key,
    index_key,
    job_key,
)
from tasks.retries import RetrySchedule
from tasks.settings import QueueSettings
from tasks.specs import WebhookEvent
from tasks.stats import count_status
from tasks.waiting import Subscriptions, Watch
from tasks.webhooks import EVENT_BY_STATUS, Outbox, wants

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` and the digest of the body it came with."""

    key: str
    body_sha256: str


# Atomic create: idempotency check, quota check, then the record, the tenant's index and the counters.
_CREATE = """
if KEYS[5] ~= '' then
    local first = redis.call('GET', KEYS[5])
    if first then return {'replayed', first} end
end
local active = tonumber(redis.call('GET', KEYS[4]) or '0')
local limit = tonumber(ARGV[5])
if limit >= 0 and active >= limit then return {'over_quota', tostring(active)} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'queued', 1)
redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7]) end
return {'created', ''}
"""

Mutation = Callable[[Job], bool]
"""Changes a job in place; returns False when there is nothing to write."""
LeasedMutation = Callable[[Job, bool], bool]
"""A mutation that also sees whether the job's lease is live (read with the record; still so when written)."""


class JobStore:
    """Job records, leases and listing. One instance per process; thread-safe (redis-py pools connections).

    ``client`` must decode responses (see ``connect``).
    """

    def __init__(self, client: redis.Redis, settings: QueueSettings) -> None:
        self._redis = client
        self._settings = settings
        self._create = client.register_script(_CREATE)
        self._records = Records(client)
        self.outbox = Outbox(client, settings)
        self.retries = RetrySchedule(client, settings.retry_claim_seconds)
        self.queued = QueuedWatch(client)
        self._subscriptions = Subscriptions(client)

    # ---- API side -------------------------------------------------------------------------------------------

    def create(
        self, job: Job, *, max_active: int | None = None, idempotency: Idempotency | None = None
    ) -> tuple[Job, bool]:
        """Record a new queued job in one atomic step; returns ``(job, replayed)``.

        With ``idempotency``, a key already used by this tenant returns the earlier job (``replayed``) and writes
        nothing; the same key with another body raises IdempotencyKeyReusedError. Raises QuotaExceededError when
        the tenant already has ``max_active`` unfinished jobs.
        """
        ttl = self._settings.job_ttl_seconds
        idem_key = idempotency_key(job.tenant, idempotency.key) if idempotency else ""
        idem_value = f"{job.id} {idempotency.body_sha256}" if idempotency else ""
        outcome, detail = cast(
            list[str],
            self._create(
                keys=[job_key(job.id), index_key(job.tenant), ENTERED, active_key(job.tenant), idem_key, QUEUED],
                args=[job.model_dump_json(), ttl, job.created_at.timestamp(), job.id, -1 if max_active is None else max_active, idem_value,
                      IDEMPOTENCY_TTL_SECONDS],
            ),
        )  # fmt: skip
        if outcome == "created":
            return job, False
        if outcome == "over_quota":
            raise QuotaExceededError(int(detail), max_active or 0)
        assert idempotency is not None
        first = _first_job(self, detail, idempotency)
        if first is None:  # the first job expired before its key (job TTL shorter than 24 h): start afresh
            self._redis.delete(idem_key)
            return self.create(job, max_active=max_active, idempotency=idempotency)
        return first, True

    def replay(self, tenant: str, idempotency: Idempotency) -> Job | None:
        """The job first created under this key, or None (unused key). Raises IdempotencyKeyReusedError."""
        stored = cast(str | None, self._redis.get(idempotency_key(tenant, idempotency.key)))
        return None if stored is None else _first_job(self, stored, idempotency)

    def forget_idempotency(self, job: Job, key: str) -> None:
        """Release ``key`` of a job that could not be enqueued, so the client's retry creates a new job."""
        self._redis.delete(idempotency_key(job.tenant, key))

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        """The job, or None when unknown, expired, or owned by another tenant."""
        raw = self._redis.get(job_key(job_id))
        if raw is None:
            return None
        job = Job.model_validate_json(raw)
        return job if tenant is None or job.tenant == tenant else None

    def list_jobs(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is opaque (from a previous page's ``next_cursor``)."""
        upper = f"({decode_cursor(cursor)}" if cursor else "+inf"
        found: list[Job] = []
        scanned = 0
        while len(found) < limit and scanned < limit * 20:
            page = cast(
                list[tuple[str, float]],
                self._redis.zrevrangebyscore(index_key(tenant), upper, "-inf", start=0, num=limit, withscores=True),
            )
            if not page:
                return found, None
            for raw_id, score in page:
                scanned += 1
                upper = f"({score!r}"
                job = self.get(raw_id, tenant)
                if job is None:
                    self._redis.zrem(index_key(tenant), raw_id)  # expired record: prune the index lazily
                elif (status is None or job.status == status) and (job_type is None or job.type == job_type):
                    found.append(job)
                    if len(found) == limit:
                        break
        return found, encode_cursor(upper[1:])

    def request_cancel(self, job_id: str, tenant: str) -> Job | None:
        """Queued → canceled at once; running → flagged, the worker stops at its next checkpoint.

        Raises JobNotCancelableError for a terminal job; returns None for an unknown one.
        """

        def cancel(job: Job) -> bool:
            if job.tenant != tenant:
                return False  # as if unknown: nothing is written, and None tells the caller so
            if job.status == JobStatus.QUEUED:
                job.transition(JobStatus.CANCELED)
                job.status, job.finished_at = JobStatus.CANCELED, utcnow()
            elif job.status == JobStatus.RUNNING:
                job.cancel_requested = True
            else:
                raise JobNotCancelableError(job.id, job.status)
            return True

        return self._update(job_id, cancel)

    def fail_unsent(self, job_id: str, error: SamqError) -> None:
        """Queued → failed, for a job whose message could not be sent (so it is not left queued forever)."""

        def failed(job: Job) -> bool:
            if job.status != JobStatus.QUEUED:
                return False
            _fail(job, error)
            return True

        self._update(job_id, failed)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[Watch]:
        """Subscribed to the job's end for the block; begun before the job exists, it misses nothing."""
        with self._subscriptions.subscribed(events_channel(job_id)) as next_message:
            yield Watch(lambda: self.get(job_id), next_message)

    def wait_terminal(self, job_id: str, timeout: float) -> Job | None:
        """Block until the job is terminal or ``timeout`` passes; returns the latest record."""
        with self.watching(job_id) as watch:
            return watch.wait(timeout)

    # ---- worker side ----------------------------------------------------------------------------------------

    def start(self, job_id: str, sent: str | None = None) -> Job | None:
        """Begin a new attempt: bump ``attempts``, take the lease. None when this delivery must be skipped.
        ``sent``: the record as the job's message carried it, tried first (no read when it is still the stored one).

        Skipped: unknown or terminal jobs, and jobs running under another live lease (a duplicate delivery).
        A job out of attempts is failed here with ``worker_lost``.
        """

        def begin(job: Job, lease_live: bool) -> bool:
            if job.status.is_terminal or (job.status == JobStatus.RUNNING and lease_live):
                return False
            if job.attempts >= self._settings.max_attempts:
                _fail(job, _worker_lost(job.attempts))
                return True
            if job.status == JobStatus.QUEUED:
                job.transition(JobStatus.RUNNING)
            job.status, job.started_at, job.attempts = JobStatus.RUNNING, utcnow(), job.attempts + 1
            job.error = None
            return True

        job = self._apply(job_id, begin, leased=True, sent=sent)
        return job if job is not None and job.status == JobStatus.RUNNING else None

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self._redis.exists(cancel_key(job_id)))

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        """Renew the lease of ``attempt``. False when the attempt is stale or the job left ``running``."""
        while (seen := self._records.read(job_id)) is not None:
            if not _owns(Job.model_validate_json(seen.raw), attempt):
                return False
            with self._records.writes() as pipe:
                pipe.zadd(LEASES, {job_id: time.time() + self._settings.lease_seconds})
                if self._records.commit(job_id, seen, seen.raw, pipe, remember=False):  # the record as it was read
                    return True
        return False

    def set_progress(self, job_id: str, attempt: int, done: int, total: int, unit: str) -> Job | None:
        def progress(job: Job) -> bool:
            if not _owns(job, attempt):
                return False
            job.progress.done, job.progress.total, job.progress.unit = done, total, unit
            return True

        return self._update(job_id, progress, progress_event=True)

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> bool:
        def done(job: Job) -> bool:
            if not _owns(job, attempt):
                return False
            job.transition(JobStatus.SUCCEEDED)
            job.status, job.finished_at, job.result = JobStatus.SUCCEEDED, utcnow(), result
            job.progress.done = job.progress.total
            return True

        return self._update(job_id, done) is not None

    def fail(self, job_id: str, attempt: int, error: SamqError, result: JobResult | None = None) -> bool:
        """Running → failed; ``result`` (a batch's items and failures) stays readable on the failed job."""

        def failed(job: Job) -> bool:
            if not _owns(job, attempt):
                return False
            _fail(job, error)
            job.result = result
            return True

        return self._update(job_id, failed) is not None

    def cancel_running(self, job_id: str, attempt: int, partial: JobResult | None = None) -> bool:
        """Running → canceled; ``partial`` (a video's frames done so far) becomes the job's result."""

        def canceled(job: Job) -> bool:
            if not _owns(job, attempt):
                return False
            job.transition(JobStatus.CANCELED)
            job.status, job.finished_at, job.result = JobStatus.CANCELED, utcnow(), partial
            return True

        return self._update(job_id, canceled) is not None

    def requeue(self, job_id: str, attempt: int, error: SamqError, delay: float) -> bool:
        """Running → queued after a transient failure, keeping the error; due again in ``delay`` s (tasks.retries)."""

        def back(job: Job) -> bool:
            if not _owns(job, attempt):
                return False
            job.transition(JobStatus.QUEUED)
            job.status, job.error = JobStatus.QUEUED, _job_error(error)
            return True

        return self._update(job_id, back, also=lambda pipe: RetrySchedule.schedule(pipe, job_id, delay)) is not None

    def hand_off(self, job_id: str) -> None:
        """The attempt handed its work to a batch's shards: running, without a lease (after the Lease stopped)."""
        self._redis.zrem(LEASES, job_id)

    # ---- reaper ---------------------------------------------------------------------------------------------

    def lapsed(self, now: float | None = None) -> list[str]:
        """Ids of running jobs whose lease lapsed: their worker died."""
        stamp = time.time() if now is None else now
        return cast(list[str], self._redis.zrangebyscore(LEASES, "-inf", stamp))

    def reap(self, job_id: str) -> Job | None:
        """Take back a job whose lease lapsed: queued again (returned, to be re-sent) or failed when out of
        attempts. None when there is nothing to do (the lease was renewed, or the job already moved on)."""

        def take_back(job: Job, lease_live: bool) -> bool:
            if job.status != JobStatus.RUNNING or lease_live:
                return False
            if job.attempts >= self._settings.max_attempts:
                _fail(job, _worker_lost(job.attempts))
            else:
                job.transition(JobStatus.QUEUED)
                job.status = JobStatus.QUEUED
                job.error = _job_error(WorkerLostError(f"attempt {job.attempts} lost its worker; retrying"))
            return True

        job = self._apply(job_id, take_back, leased=True)
        if job is None and getattr(self.get(job_id), "status", None) != JobStatus.RUNNING:
            self._redis.zrem(LEASES, job_id)  # a stale entry: the record expired or already moved on
        return job if job is not None and job.status == JobStatus.QUEUED else None

    # ---- the one write path ---------------------------------------------------------------------------------

    def _update(
        self,
        job_id: str,
        mutate: Mutation,
        *,
        progress_event: bool = False,
        also: Callable[[Pipeline], None] | None = None,
    ) -> Job | None:
        return self._apply(job_id, lambda job, _live: mutate(job), progress_event=progress_event, also=also)

    def _apply(
        self,
        job_id: str,
        mutate: LeasedMutation,
        *,
        leased: bool = False,
        progress_event: bool = False,
        also: Callable[[Pipeline], None] | None = None,
        sent: str | None = None,
    ) -> Job | None:
        """Apply ``mutate`` to the record atomically (a compare-and-set, computed again on a race); ``leased``: the
        change depends on whether the lease is live; ``also`` adds writes to the same change; ``sent``: a copy of the
        record (as a message carried it), tried first."""
        seen = self._records.carried(sent) if sent else None if leased else self._records.remembered(job_id)
        seen = seen or self._records.read(job_id, leased)
        while seen is not None:
            job = Job.model_validate_json(seen.raw)
            before = job.status
            try:
                changed = mutate(job, bool(seen.lease_live))
            except SamqError:
                if not seen.remembered:
                    raise
                changed = False  # judged on the record as this process wrote it: judge the stored one
            if changed:
                raw = job.model_dump_json()
                with self._records.writes() as pipe:
                    pipe.set(job_key(job_id), raw, ex=self._settings.job_ttl_seconds)
                    if job.cancel_requested and job.status == JobStatus.RUNNING:
                        pipe.set(cancel_key(job.id), "1", ex=self._settings.job_ttl_seconds)
                    if job.status != before:
                        self._on_status_change(pipe, job, before, raw)
                    elif progress_event and wants(job, WebhookEvent.PROGRESS) and self.outbox.progress_gate(job_id):
                        self.outbox.stage(pipe, job, WebhookEvent.PROGRESS)
                    if also is not None:
                        also(pipe)
                    if self._records.commit(job_id, seen, raw, pipe, remember=not job.status.is_terminal):
                        return job
            elif not seen.remembered:
                return None
            seen = self._records.read(job_id, leased)
        return None

    def _on_status_change(self, pipe: Pipeline, job: Job, before: JobStatus, raw: str) -> None:
        count_status(pipe, job, before)
        if job.status == JobStatus.QUEUED:  # its message goes out now (or, for a retry, when due)
            QueuedWatch.enter(pipe, job.id)
        else:  # started or ended: it waits for no message or retry any more
            RetrySchedule.forget(pipe, job.id)
            QueuedWatch.leave(pipe, job.id)
        if job.status.is_terminal:
            pipe.delete(cancel_key(job.id))
            if not before.is_terminal:
                pipe.decr(active_key(job.tenant))
        if job.status == JobStatus.RUNNING:
            pipe.zadd(LEASES, {job.id: time.time() + self._settings.lease_seconds})
        else:
            pipe.zrem(LEASES, job.id)
        event = EVENT_BY_STATUS.get(job.status)
        if event is not None and wants(job, event):
            self.outbox.stage(pipe, job, event)
        if job.status.is_terminal:  # the record itself: a waiter reads nothing more (and wakes for nothing less)
            pipe.publish(events_channel(job.id), raw)


def _first_job(store: JobStore, stored: str, idempotency: Idempotency) -> Job | None:
    """The job behind an idempotency key's stored ``"{job_id} {body_sha256}"``."""
    first_id, _, body_sha256 = stored.partition(" ")
    if body_sha256 != idempotency.body_sha256:
        raise IdempotencyKeyReusedError(first_id)
    return store.get(first_id)


def _owns(job: Job, attempt: int) -> bool:
    """True when ``attempt`` is the job's current running attempt (anything else is a fenced zombie)."""
    return job.status == JobStatus.RUNNING and job.attempts == attempt


def _job_error(error: SamqError) -> JobError:
    return JobError(code=error.code, message=error.message, retryable=error.retryable)


def _fail(job: Job, error: SamqError) -> None:
    job.transition(JobStatus.FAILED)
    job.status, job.finished_at, job.error = JobStatus.FAILED, utcnow(), _job_error(error)


def _worker_lost(attempts: int) -> WorkerLostError:
    return WorkerLostError(f"the job lost its worker on all {attempts} attempts (SAMQ_MAX_ATTEMPTS)")
