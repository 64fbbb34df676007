"""The Redis key layout, in one place (``storage.keys`` is its twin for object storage).

Everything samq keeps in Redis lives under ``samq:``; Celery's own queues use the bare queue names.
"""

from __future__ import annotations

import hashlib

PREFIX = "samq"

# ---- jobs (tasks.store) ---------------------------------------------------------------------------------------

LEASES = f"{PREFIX}:leases"
"""Sorted set: running job id → lease expiry (unix seconds). A lapsed lease means a dead worker."""
QUEUED = f"{PREFIX}:queued"
"""Sorted set: queued job id → when its message was (last) sent or found (``tasks.orphans``)."""
ORPHAN_GATE = f"{PREFIX}:orphans:gate"
"""Set (with an expiry) by the worker whose housekeeping pass sweeps for orphaned queued jobs this period."""
RETRIES = f"{PREFIX}:retries"
"""Sorted set: queued job id → when its next attempt is due (a transient failure's backoff; ``tasks.retries``)."""
ENTERED = f"{PREFIX}:stats:entered"
"""Hash: status → how many jobs entered it (the ``samq_jobs`` counter)."""
RUNNING = f"{PREFIX}:stats:running"
"""Hash: job type → how many jobs of it are running now (+1 entering ``running``, -1 leaving it)."""
EMBEDDINGS = f"{PREFIX}:stats:embeddings"
"""Hash: where succeeded jobs' image embeddings came from (``memory``, ``shared``, ``miss``) → how many."""
BATCH_ITEMS = f"{PREFIX}:stats:batch-items"
"""Hash: batch item outcome (``succeeded``, ``failed``, ``not_run``) → how many."""
DELIVERIES = f"{PREFIX}:stats:deliveries"
"""Hash: webhook delivery attempt outcome (``delivered``, ``retrying``, ``gone``, ``exhausted``) → how many."""


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def index_key(tenant: str) -> str:
    """Sorted set of the tenant's job ids by creation time (listing)."""
    return f"{PREFIX}:jobs:{tenant}"


def cancel_key(job_id: str) -> str:
    """Set while a running job has a cancel request: what the worker's checkpoints read (one cheap EXISTS)."""
    return f"{PREFIX}:cancel:{job_id}"


def active_key(tenant: str) -> str:
    """How many of the tenant's jobs are unfinished (queued or running): the per-tenant quota's counter."""
    return f"{PREFIX}:active:{tenant}"


def idempotency_key(tenant: str, key: str) -> str:
    return f"{PREFIX}:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"


def events_channel(job_id: str) -> str:
    """Pub/sub channel announcing the job's end: one message, the record as it became terminal (``Prefer: wait``)."""
    return f"{PREFIX}:events:{job_id}"


def runtime_key(job_type: str) -> str:
    """Hash: the run-time histogram of finished jobs of one type."""
    return f"{PREFIX}:stats:runtime:{job_type}"


def queue_wait_key(job_type: str) -> str:
    """Hash: the histogram of first attempts' waits (created → started) of one job type."""
    return f"{PREFIX}:stats:queue-wait:{job_type}"


def workers_key(queue: str) -> str:
    """Sorted set: the workers consuming ``queue`` → when their last heartbeat lapses (``tasks.roster``)."""
    return f"{PREFIX}:workers:{queue}"


def upload_key(upload_id: str) -> str:
    return f"{PREFIX}:upload:{upload_id}"


# ---- batches (tasks.batch_store) ------------------------------------------------------------------------------

BATCHES = f"{PREFIX}:batches"
"""Ids of batches that fanned out and are not finalized yet: what the reconcile pass visits."""
SHARD_LEASES = f"{PREFIX}:batch-shards"
"""``{job_id}:{shard}`` → lease expiry (unix seconds) of each running shard."""


def batch_key(job_id: str, part: str = "") -> str:
    """The batch's hash (its shape and counts), or one of its other keys: ``items`` (outcomes), ``tries``, ``done``
    (shards), ``final`` (the finalizer's claim), ``nudge``, ``tick``."""
    return f"{PREFIX}:batch:{job_id}" + (f":{part}" if part else "")


# ---- webhooks (tasks.webhooks) --------------------------------------------------------------------------------

WEBHOOKS = f"{PREFIX}:webhooks"
DUE = f"{WEBHOOKS}:due"
"""Sorted set: outbox event id → when its next delivery attempt is due."""


def event_key(event_id: str) -> str:
    return f"{WEBHOOKS}:event:{event_id}"


def log_key(job_id: str) -> str:
    """The job's delivery log (``GET /v1/jobs/{id}/deliveries``)."""
    return f"{WEBHOOKS}:log:{job_id}"


def secret_key(tenant: str) -> str:
    return f"{WEBHOOKS}:secret:{tenant}"


def progress_gate_key(job_id: str) -> str:
    return f"{WEBHOOKS}:progress-gate:{job_id}"
