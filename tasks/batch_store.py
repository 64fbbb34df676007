"""A batch's fan-out state in Redis: counters, per-item records, shard leases and the finalizer's claim.

No Celery chords (they lose bodies and loop on Redis). Instead:

- every item is recorded once (``HSETNX``) and counted in the same script, so a shard that runs twice (its worker
  died, its message came back) never counts an item twice;
- a shard is marked done once (``SADD``); the call that adds the last shard is the one finalizer;
- running shards hold leases that their worker renews; a lapsed lease means a dead worker, and the reconcile
  pass re-sends the shard;
- the finalizer holds a claim with a lease too; a batch whose shards are all done but which has no live
  finalizer (it died) is finalized again by the reconcile pass.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery

from storage import S3Lister
from tasks.dispatch import enqueue_shard
from tasks.settings import QueueSettings
from tasks.specs import BatchSpec
from tasks.store import PREFIX, JobStore, cancel_key

log = logging.getLogger(__name__)

BATCHES = f"{PREFIX}:batches"
"""Ids of batches that fanned out and are not finalized yet: what the reconcile pass visits."""
NUDGE_SECONDS = 60
"""The reconcile pass re-sends a lost finalizer's task at most this often per batch."""
SHARD_LEASES = f"{PREFIX}:batch-shards"
"""``{job_id}:{shard}`` → lease expiry (unix seconds) of each running shard."""


def batch_key(job_id: str) -> str:
    return f"{PREFIX}:batch:{job_id}"


def _items_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:items"


def _tries_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:tries"


def _done_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:done"


def _final_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:final"


def _nudge_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:nudge"


def _tick_key(job_id: str) -> str:
    return f"{batch_key(job_id)}:tick"


# Open (or re-open after the expanding attempt died): the shape is written once; the attempt always.
_OPEN = """
redis.call('HSET', KEYS[1], 'attempt', ARGV[1])
local created = redis.call('HSETNX', KEYS[1], 'total', ARGV[2])
if created == 1 then
    redis.call('HSET', KEYS[1], 'shards', ARGV[3], 'max_failures', ARGV[4], 'succeeded', 0, 'failed', 0)
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
redis.call('SADD', ARGV[6], ARGV[7])
return created
"""

# Record an item's outcome once, and count it (every write renews the batch's expiry): returns {succeeded, failed}, or {-1, -1} if already recorded.
_RECORD = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {-1, -1} end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local counts = redis.call('HMGET', KEYS[1], 'succeeded', 'failed')
return {tonumber(counts[1]), tonumber(counts[2])}
"""

# Take a shard: not if it is done, nor while another worker's lease on it is live.
_CLAIM = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local lease = redis.call('ZSCORE', KEYS[2], ARGV[2])
if lease and tonumber(lease) > tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return 1
"""

# Drop a lapsed shard lease; 1 for the one caller that dropped it.
_TAKE_BACK = """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) > tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# Mark a shard done; 1 for the one call that completes the batch's last shard.
_COMPLETE = """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('SCARD', KEYS[1]) == tonumber(redis.call('HGET', KEYS[3], 'shards')) then return 1 end
return 0
"""


@dataclass(frozen=True)
class BatchState:
    attempt: int
    """The batch job's attempt that fanned out: every write to the job record names it."""
    total: int
    shards: int
    shards_done: int
    max_failures: int
    succeeded: int
    failed: int
    stop: str | None
    """``canceled`` or ``failure_rate`` once the batch must stop taking new items."""

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def complete(self) -> bool:
        return self.shards_done >= self.shards


class BatchStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int, lease_seconds: float) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._lease = lease_seconds
        self._open = client.register_script(_OPEN)
        self._record = client.register_script(_RECORD)
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._take_back = client.register_script(_TAKE_BACK)

    # ---- the expanding attempt ------------------------------------------------------------------------------

    def open(self, job_id: str, attempt: int, total: int, shards: int, max_failures: int) -> bool:
        """Record the batch's shape (False when an earlier attempt already did: its shards are kept)."""
        keys = [batch_key(job_id), _items_key(job_id), _tries_key(job_id), _done_key(job_id)]
        args: list[str | int] = [attempt, total, shards, max_failures, self._ttl, BATCHES, job_id]
        return bool(self._open(keys=keys, args=args))

    def state(self, job_id: str) -> BatchState | None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(batch_key(job_id))
            pipe.scard(_done_key(job_id))
            fields, shards_done = cast(tuple[dict[str, str], int], tuple(pipe.execute()))
        if "total" not in fields:
            return None
        return BatchState(
            attempt=int(fields["attempt"]),
            total=int(fields["total"]),
            shards=int(fields["shards"]),
            shards_done=shards_done,
            max_failures=int(fields["max_failures"]),
            succeeded=int(fields["succeeded"]),
            failed=int(fields["failed"]),
            stop=fields.get("stop"),
        )

    def expect(self, job_id: str) -> BatchState:
        """The state of a batch known to be open (raises LookupError if its keys are gone)."""
        state = self.state(job_id)
        if state is None:
            raise LookupError(f"batch {job_id} has no state in Redis (expired?)")
        return state

    # ---- shards ---------------------------------------------------------------------------------------------

    def claim_shard(self, job_id: str, shard: int) -> bool:
        now = time.time()
        keys = [_done_key(job_id), SHARD_LEASES]
        return bool(self._claim(keys=keys, args=[shard, _member(job_id, shard), now, now + self._lease]))

    def renew_shard(self, job_id: str, shard: int) -> bool:
        """Extend the lease; False once it is gone (the shard finished, or was taken back)."""
        changed = self._redis.zadd(SHARD_LEASES, {_member(job_id, shard): time.time() + self._lease}, xx=True, ch=True)
        return bool(changed)

    def release_shard(self, job_id: str, shard: int) -> None:
        """Give the shard up unfinished (it stopped, or ran out of time and was re-sent)."""
        self._redis.zrem(SHARD_LEASES, _member(job_id, shard))

    def complete_shard(self, job_id: str, shard: int) -> bool:
        """Mark the shard done; True for exactly one call per batch: the one that completes the last shard."""
        keys = [_done_key(job_id), SHARD_LEASES, batch_key(job_id)]
        return bool(self._complete(keys=keys, args=[shard, _member(job_id, shard), self._ttl]))

    def lapsed_shards(self) -> list[tuple[str, int]]:
        """Shards whose worker died: their lease lapsed."""
        members = cast(list[str], self._redis.zrangebyscore(SHARD_LEASES, "-inf", time.time()))
        return [_parse_member(m) for m in members]

    def take_back(self, job_id: str, shard: int) -> bool:
        """Drop a lapsed lease; True for the one caller that dropped it (and must re-send the shard)."""
        return bool(self._take_back(keys=[SHARD_LEASES], args=[_member(job_id, shard), time.time()]))

    # ---- items ----------------------------------------------------------------------------------------------

    def pending(self, job_id: str, indices: Sequence[int]) -> list[int]:
        """Those of ``indices`` not recorded yet."""
        if not indices:
            return []
        recorded = cast(list[str | None], self._redis.hmget(_items_key(job_id), [str(i) for i in indices]))
        return [i for i, record in zip(indices, recorded, strict=True) if record is None]

    def try_item(self, job_id: str, index: int) -> int:
        """Count one more attempt at the item; returns how many there have been (crashes included)."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(_tries_key(job_id), str(index), 1)
            pipe.expire(_tries_key(job_id), self._ttl)
            tries, _ = pipe.execute()
        return int(tries)

    def record(self, job_id: str, index: int, record: dict[str, Any]) -> tuple[int, int] | None:
        """Store the item's outcome (``record["status"]`` is ``succeeded`` or ``failed``) and count it. Returns the
        batch's ``(succeeded, failed)``, or None when the item was already recorded (nothing counted)."""
        field = "succeeded" if record["status"] == "succeeded" else "failed"
        keys = [batch_key(job_id), _items_key(job_id)]
        counts = cast(list[int], self._record(keys=keys, args=[index, json.dumps(record), field, self._ttl]))
        return None if counts[0] < 0 else (counts[0], counts[1])

    def item(self, job_id: str, index: int) -> dict[str, Any] | None:
        raw = cast(str | None, self._redis.hget(_items_key(job_id), str(index)))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    def items(self, job_id: str, total: int, page: int = 1000) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Every item's record in index order (None: never recorded), a page of ``HMGET`` at a time."""
        for start in range(0, total, page):
            indices = [str(i) for i in range(start, min(start + page, total))]
            for i, raw in enumerate(cast(list[str | None], self._redis.hmget(_items_key(job_id), indices))):
                yield start + i, None if raw is None else json.loads(raw)

    def progress_due(self, job_id: str) -> bool:
        """At most one progress write a second per batch, whichever shard asks."""
        return bool(self._redis.set(_tick_key(job_id), "1", nx=True, px=1000))

    # ---- stopping and finalizing ----------------------------------------------------------------------------

    def stop(self, job_id: str, reason: str) -> None:
        """Take no new items (``canceled``, ``failure_rate``); the first reason stays."""
        self._redis.hsetnx(batch_key(job_id), "stop", reason)

    def stopping(self, job_id: str) -> str | None:
        """Why the batch must stop taking items, if it must: one round trip, read before every item."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(batch_key(job_id), "stop")
            pipe.exists(cancel_key(job_id))
            reason, canceled = pipe.execute()
        return cast(str | None, reason) or ("canceled" if canceled else None)

    def claim_finalizer(self, job_id: str) -> bool:
        return bool(self._redis.set(_final_key(job_id), "1", nx=True, px=int(self._lease * 1000)))

    def renew_finalizer(self, job_id: str) -> None:
        self._redis.pexpire(_final_key(job_id), int(self._lease * 1000))

    def release_finalizer(self, job_id: str) -> None:
        self._redis.delete(_final_key(job_id))

    def finalizer_live(self, job_id: str) -> bool:
        return bool(self._redis.exists(_final_key(job_id)))

    def nudge(self, job_id: str, seconds: int) -> bool:
        """True at most once per ``seconds``: the reconcile pass re-sends a finalize task no more often."""
        return bool(self._redis.set(_nudge_key(job_id), "1", nx=True, ex=seconds))

    def open_batches(self) -> list[str]:
        return sorted(cast(set[str], self._redis.smembers(BATCHES)))

    def close(self, job_id: str) -> None:
        """The batch is terminal: off the reconcile list. Item records stay (the API serves them) until they expire."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(BATCHES, job_id)
            pipe.delete(_tries_key(job_id), _final_key(job_id), _nudge_key(job_id), _tick_key(job_id))
            pipe.execute()


def _member(job_id: str, shard: int) -> str:
    return f"{job_id}:{shard}"


def _parse_member(member: str) -> tuple[str, int]:
    job_id, _, shard = member.rpartition(":")
    return job_id, int(shard)


@dataclass(frozen=True)
class BatchLimits:
    shard_size: int = 16
    """Images per shard unless the batch sets ``shard_size`` (a video is always a shard of its own)."""
    encode_batch: int | None = None
    """Images of a shard encoded in one call (``set_image_batch``); None: 8 on a GPU, 1 (off) on CPU."""
    max_items: int = 100_000


@dataclass(frozen=True)
class BatchContext:
    """What batch work needs besides the Runtime: its Redis state, S3 listing and a way to send shards."""

    store: BatchStore
    send_shard: Callable[[str, int, bool], None]
    list_s3: S3Lister | None
    limits: BatchLimits = dataclasses.field(default_factory=BatchLimits)


def batch_context(app: Celery, settings: QueueSettings, client: redis.Redis, list_s3: S3Lister | None) -> BatchContext:
    """The context a worker process (or its housekeeping timer) runs batch work with."""
    return BatchContext(
        store=BatchStore(client, settings.job_ttl_seconds, settings.lease_seconds),
        send_shard=lambda job_id, shard, videos: enqueue_shard(app, job_id, shard, videos),
        list_s3=list_s3,
        limits=BatchLimits(
            shard_size=settings.batch_shard_size,
            encode_batch=settings.batch_encode_size,
            max_items=settings.batch_max_items,
        ),
    )


def reconcile(jobs: JobStore, ctx: BatchContext, send_finalize: Callable[[str], None]) -> None:
    """One pass: re-send shards whose worker died; stop canceled batches; finalize those whose finalizer was lost.

    Only Redis is touched here (it runs on the worker's timer, never near a model).
    """
    for job_id, shard in ctx.store.lapsed_shards():
        job = jobs.get(job_id)
        if ctx.store.take_back(job_id, shard) and job is not None and not job.status.is_terminal:
            log.warning("batch %s shard %d: lease lapsed (worker lost); sent again", job_id, shard)
            ctx.send_shard(job_id, shard, isinstance(job.spec, BatchSpec) and job.spec.template.type == "track")
    for job_id in ctx.store.open_batches():
        job = jobs.get(job_id)
        if job is None or job.status.is_terminal:
            ctx.store.close(job_id)
            continue
        state = ctx.store.state(job_id)
        if state is None:
            continue
        if state.stop is None and jobs.cancel_requested(job_id):
            ctx.store.stop(job_id, "canceled")
        elif not (state.complete or state.stop):
            continue
        if not ctx.store.finalizer_live(job_id) and ctx.store.nudge(job_id, NUDGE_SECONDS):
            log.warning("batch %s: no live finalizer; finalize sent", job_id)
            send_finalize(job_id)
