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

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis
from pydantic import Field

from tasks.jobs import Record
from tasks.redis_keys import BATCH_ITEMS, BATCHES, SHARD_LEASES, batch_key, cancel_key


class ItemFile(Record):
    name: str
    """Relative to the batch job's folder: ``items/000012/result.json``."""
    key: str
    bytes: int


class ItemError(Record):
    code: str
    message: str


class ItemRecord(Record):
    """One item's outcome, written once: where a succeeded item's files are, or why it failed."""

    status: Literal["succeeded", "failed"]
    name: str
    """The item's ``name``, else its media reference."""
    document: str | None = None
    """Succeeded: the name (among ``files``) of its result document."""
    files: list[ItemFile] = Field(default_factory=list)
    timings: dict[str, float] | None = None
    input: dict[str, Any] | None = None
    """Failed: the item's media reference."""
    error: ItemError | None = None

    @property
    def document_key(self) -> str:
        return next(f.key for f in self.files if f.name == self.document)


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

# Record an item's outcome once, and count it in the batch and the cluster's statistics (every write renews the batch's expiry): returns {succeeded, failed}, or {-1, -1} if already recorded.
_RECORD = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {-1, -1} end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
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
        keys = [batch_key(job_id), batch_key(job_id, "items"), batch_key(job_id, "tries"), batch_key(job_id, "done")]
        args: list[str | int] = [attempt, total, shards, max_failures, self._ttl, BATCHES, job_id]
        return bool(self._open(keys=keys, args=args))

    def state(self, job_id: str) -> BatchState | None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(batch_key(job_id))
            pipe.scard(batch_key(job_id, "done"))
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
        keys = [batch_key(job_id, "done"), SHARD_LEASES]
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
        keys = [batch_key(job_id, "done"), SHARD_LEASES, batch_key(job_id)]
        return bool(self._complete(keys=keys, args=[shard, _member(job_id, shard), self._ttl]))

    def unclaimed(self, job_id: str, shard: int) -> bool:
        """Neither done nor held under a lease (live or lapsed): no run of the shard has begun, or one was taken back."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.sismember(batch_key(job_id, "done"), str(shard))
            pipe.zscore(SHARD_LEASES, _member(job_id, shard))
            done, lease = pipe.execute()
        return not done and lease is None

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
        recorded = cast(list[str | None], self._redis.hmget(batch_key(job_id, "items"), [str(i) for i in indices]))
        return [i for i, record in zip(indices, recorded, strict=True) if record is None]

    def try_item(self, job_id: str, index: int) -> int:
        """Count one more attempt at the item; returns how many there have been (crashes included)."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(batch_key(job_id, "tries"), str(index), 1)
            pipe.expire(batch_key(job_id, "tries"), self._ttl)
            tries, _ = pipe.execute()
        return int(tries)

    def record(self, job_id: str, index: int, record: ItemRecord) -> tuple[int, int] | None:
        """Store the item's outcome and count it. Returns the batch's ``(succeeded, failed)``, or None when the item
        was already recorded (nothing counted)."""
        keys = [batch_key(job_id), batch_key(job_id, "items"), BATCH_ITEMS]
        args: list[str | int] = [index, record.model_dump_json(exclude_none=True), record.status, self._ttl]
        counts = cast(list[int], self._record(keys=keys, args=args))
        return None if counts[0] < 0 else (counts[0], counts[1])

    def item(self, job_id: str, index: int) -> ItemRecord | None:
        raw = cast(str | None, self._redis.hget(batch_key(job_id, "items"), str(index)))
        return None if raw is None else ItemRecord.model_validate_json(raw)

    def items(self, job_id: str, total: int, page: int = 1000) -> Iterator[tuple[int, ItemRecord | None]]:
        """Every item's record in index order (None: never recorded), a page of ``HMGET`` at a time."""
        for start in range(0, total, page):
            indices = [str(i) for i in range(start, min(start + page, total))]
            for i, raw in enumerate(cast(list[str | None], self._redis.hmget(batch_key(job_id, "items"), indices))):
                yield start + i, None if raw is None else ItemRecord.model_validate_json(raw)

    def progress_due(self, job_id: str) -> bool:
        """At most one progress write a second per batch, whichever shard asks."""
        return bool(self._redis.set(batch_key(job_id, "tick"), "1", nx=True, px=1000))

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
        return bool(self._redis.set(batch_key(job_id, "final"), "1", nx=True, px=int(self._lease * 1000)))

    def renew_finalizer(self, job_id: str) -> None:
        self._redis.pexpire(batch_key(job_id, "final"), int(self._lease * 1000))

    def release_finalizer(self, job_id: str) -> None:
        self._redis.delete(batch_key(job_id, "final"))

    def finalizer_live(self, job_id: str) -> bool:
        return bool(self._redis.exists(batch_key(job_id, "final")))

    def nudge(self, job_id: str, seconds: int) -> bool:
        """True at most once per ``seconds``: the reconcile pass re-sends a finalize task no more often."""
        return bool(self._redis.set(batch_key(job_id, "nudge"), "1", nx=True, ex=seconds))

    def open_batches(self) -> list[str]:
        return sorted(cast(set[str], self._redis.smembers(BATCHES)))

    def close(self, job_id: str) -> None:
        """The batch is terminal: off the reconcile list. Item records stay (the API serves them) until they expire."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(BATCHES, job_id)
            pipe.delete(
                batch_key(job_id, "tries"),
                batch_key(job_id, "final"),
                batch_key(job_id, "nudge"),
                batch_key(job_id, "tick"),
            )
            pipe.execute()


def _member(job_id: str, shard: int) -> str:
    return f"{job_id}:{shard}"


def _parse_member(member: str) -> tuple[str, int]:
    job_id, _, shard = member.rpartition(":")
    return job_id, int(shard)
