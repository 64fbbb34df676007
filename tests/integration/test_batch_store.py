"""A batch's fan-out state (tasks.batch_store) against a real Redis server: once-only counts, one finalizer,
shard leases, stopping, and the reconcile pass over a real job batch_store."""

from __future__ import annotations

import random
import time
from typing import Literal

import pytest
import redis

from tasks.batch_store import BatchState, BatchStore
from tasks.jobs import JobResult
from tasks.redis_keys import batch_key, cancel_key
from tests.support.races import BATCH_TTL, LAPSE, LONG_LEASE, race, rec

BOX = {"x0": 1, "y0": 1, "x1": 20, "y1": 20}
SEGMENT = {"type": "segment", "prompts": [{"box": BOX}]}
TRACK = {"type": "track", "objects": [{"id": 1, "box": BOX}]}
RESULT = JobResult(files=[], summary={"total": 0})


# ---- open / close ---------------------------------------------------------------------------------------------


def test_open_records_the_shape_once_and_the_attempt_always(batch_store: BatchStore, redis_client: redis.Redis) -> None:
    assert batch_store.state("job_a") is None
    with pytest.raises(LookupError):
        batch_store.expect("job_a")
    assert batch_store.open_batches() == []

    assert batch_store.open("job_a", 1, total=40, shards=3, max_failures=2) is True
    assert batch_store.expect("job_a") == BatchState(
        attempt=1, total=40, shards=3, shards_done=0, max_failures=2, succeeded=0, failed=0, stop=None
    )
    assert batch_store.open_batches() == ["job_a"]
    assert 0 < redis_client.ttl(batch_key("job_a")) <= BATCH_TTL

    assert batch_store.record("job_a", 0, rec("succeeded")) == (1, 0)
    assert batch_store.record("job_a", 1, rec("failed")) == (1, 1)
    assert not batch_store.complete_shard("job_a", 0)

    # The expanding attempt died and a second one re-opens (with whatever it would count now): the shape and the
    # counts of the first stay, only the attempt that owns the job moves on.
    assert batch_store.open("job_a", 2, total=99, shards=9, max_failures=7) is False
    state = batch_store.expect("job_a")
    assert state == BatchState(
        attempt=2, total=40, shards=3, shards_done=1, max_failures=2, succeeded=1, failed=1, stop=None
    )
    assert (state.done, state.complete) == (2, False)
    assert batch_store.open_batches() == ["job_a"]

    assert batch_store.open("job_b", 1, total=1, shards=1, max_failures=0) is True
    assert batch_store.open_batches() == ["job_a", "job_b"]
    batch_store.close("job_a")
    assert batch_store.open_batches() == ["job_b"]
    # Closed is only off the reconcile list: the API still serves the counts and the item records.
    assert batch_store.expect("job_a").succeeded == 1
    assert batch_store.item("job_a", 0) == rec("succeeded")
    batch_store.close("job_a")  # twice is harmless
    assert batch_store.open_batches() == ["job_b"]


def test_every_key_of_a_batch_expires(batch_store: BatchStore, redis_client: redis.Redis) -> None:
    batch_store.open("job_t", 1, total=4, shards=2, max_failures=0)
    batch_store.record("job_t", 0, rec("succeeded"))
    batch_store.try_item("job_t", 1)
    batch_store.complete_shard("job_t", 0)
    ttls = {suffix: redis_client.ttl(batch_key("job_t") + suffix) for suffix in ("", ":items", ":tries", ":done")}
    assert all(0 < ttl <= BATCH_TTL for ttl in ttls.values()), ttls


# ---- items ----------------------------------------------------------------------------------------------------


def test_each_item_is_counted_once_when_8_threads_record_the_same_50(batch_store: BatchStore) -> None:
    total, threads = 60, 8
    recorded = [i for i in range(total) if i % 6 != 5]  # 50 items; every sixth is never recorded
    unrecorded = [i for i in range(total) if i % 6 == 5]
    assert len(recorded) == 50

    def outcome(index: int) -> Literal["succeeded", "failed"]:
        return "failed" if index % 4 == 0 else "succeeded"

    batch_store.open("job_r", 1, total=total, shards=4, max_failures=total)

    def record_all(n: int) -> list[tuple[int, tuple[int, int] | None]]:
        order = recorded.copy()
        random.Random(n).shuffle(order)
        return [(i, batch_store.record("job_r", i, rec(outcome(i), n))) for i in order]

    results = race(threads, record_all)

    winners: dict[int, list[int]] = {}
    counts: list[tuple[int, int]] = []
    for n, calls in enumerate(results):
        for index, returned in calls:
            if returned is not None:
                winners.setdefault(index, []).append(n)
                counts.append(returned)
    assert sorted(winners) == recorded
    assert all(len(w) == 1 for w in winners.values()), "an item was counted by more than one thread"
    # Each counting call saw the counts its own increment made: the running totals are 1 … 50, each once.
    assert sorted(s + f for s, f in counts) == list(range(1, 51))

    failed = sum(outcome(i) == "failed" for i in recorded)
    state = batch_store.expect("job_r")
    assert (state.succeeded, state.failed, state.done) == (50 - failed, failed, 50)

    # A duplicate (a shard run twice, now with another outcome) counts nothing and changes no record.
    assert batch_store.record("job_r", 0, rec("succeeded", 99)) is None
    assert batch_store.record("job_r", 1, rec("failed", 99)) is None
    assert batch_store.expect("job_r") == state

    assert batch_store.pending("job_r", list(range(total))) == unrecorded
    assert batch_store.pending("job_r", [59, 0, 5, 1]) == [59, 5]
    assert batch_store.pending("job_r", []) == []

    listed = list(batch_store.items("job_r", total, page=7))
    assert [index for index, _ in listed] == list(range(total))
    for index, record in listed:
        if index in unrecorded:
            assert record is None, index
        else:
            assert record == rec(outcome(index), winners[index][0]), index
            assert batch_store.item("job_r", index) == record
    assert batch_store.item("job_r", 5) is None


def test_try_item_counts_every_attempt(batch_store: BatchStore) -> None:
    batch_store.open("job_y", 1, total=2, shards=1, max_failures=0)
    assert sorted(race(6, lambda _n: batch_store.try_item("job_y", 0))) == [1, 2, 3, 4, 5, 6]
    assert batch_store.try_item("job_y", 1) == 1


# ---- one finalizer --------------------------------------------------------------------------------------------


def test_exactly_one_finalizer_when_20_shards_complete_on_80_racing_threads(batch_store: BatchStore) -> None:
    shards, per_shard = 20, 4
    batch_store.open("job_f", 1, total=shards * 16, shards=shards, max_failures=0)

    def complete(n: int) -> tuple[bool, int]:
        last = batch_store.complete_shard("job_f", n % shards)
        return last, batch_store.expect("job_f").shards_done

    results = race(shards * per_shard, complete)
    finalizers = [done for last, done in results if last]
    assert finalizers == [shards], "exactly one call finalizes, seeing every shard done"
    state = batch_store.expect("job_f")
    assert state.shards_done == shards and state.complete
    assert not any(batch_store.complete_shard("job_f", s) for s in range(shards)), "a late duplicate never finalizes"


def test_the_finalizer_is_the_call_that_completes_the_last_shard(batch_store: BatchStore) -> None:
    shards, per_shard = 20, 4
    batch_store.open("job_g", 1, total=shards, shards=shards, max_failures=0)
    last_shard = 13
    others = [s for s in range(shards) if s != last_shard]

    first = race(len(others) * per_shard, lambda n: batch_store.complete_shard("job_g", others[n % len(others)]))
    assert not any(first), "no call finalizes while a shard is still running"
    state = batch_store.expect("job_g")
    assert (state.shards_done, state.complete) == (shards - 1, False)

    last = race(per_shard, lambda _n: batch_store.complete_shard("job_g", last_shard))
    assert sorted(last) == [False] * (per_shard - 1) + [True]
    assert batch_store.expect("job_g").complete


# ---- shard leases ---------------------------------------------------------------------------------------------


def test_shard_leases_lapse_and_are_taken_back_by_exactly_one_caller(
    batch_store: BatchStore, short_batch_store: BatchStore
) -> None:
    batch_store.open("job_l", 1, total=64, shards=4, max_failures=0)
    assert short_batch_store.claim_shard("job_l", 0)
    assert short_batch_store.claim_shard("job_l", 1)
    assert batch_store.claim_shard("job_l", 2)
    assert not batch_store.claim_shard("job_l", 0), "a live lease is not claimed twice"
    assert not short_batch_store.claim_shard("job_l", 2)
    assert not batch_store.complete_shard("job_l", 3)
    assert not batch_store.claim_shard("job_l", 3), "a done shard is never claimed again"
    assert short_batch_store.renew_shard("job_l", 0)
    assert batch_store.lapsed_shards() == []
    assert not batch_store.take_back("job_l", 0), "a live lease is not taken back"
    assert not batch_store.take_back("job_l", 3), "nor one that does not exist"

    time.sleep(LAPSE)
    assert sorted(batch_store.lapsed_shards()) == [("job_l", 0), ("job_l", 1)]
    assert race(6, lambda _n: batch_store.take_back("job_l", 0)).count(True) == 1
    assert batch_store.lapsed_shards() == [("job_l", 1)]
    assert not batch_store.renew_shard("job_l", 0), "the lost worker learns that its lease is gone"
    assert not batch_store.take_back("job_l", 0)

    # The re-sent shard claims it afresh.
    assert batch_store.claim_shard("job_l", 0)
    assert not short_batch_store.claim_shard("job_l", 0)
    assert batch_store.renew_shard("job_l", 0)

    # Completing a shard drops its lease: it is neither renewed, lapsed nor claimable.
    assert not batch_store.complete_shard("job_l", 0)
    assert not batch_store.renew_shard("job_l", 0)
    assert not batch_store.claim_shard("job_l", 0)

    # Releasing a shard (it stopped, or ran out of time) leaves it claimable.
    batch_store.release_shard("job_l", 2)
    assert not batch_store.renew_shard("job_l", 2)
    assert batch_store.claim_shard("job_l", 2)
    assert batch_store.lapsed_shards() == [("job_l", 1)]


def test_racing_claims_of_one_shard_give_one_lease(batch_store: BatchStore) -> None:
    batch_store.open("job_c", 1, total=16, shards=1, max_failures=0)
    assert race(8, lambda _n: batch_store.claim_shard("job_c", 0)).count(True) == 1


# ---- stopping -------------------------------------------------------------------------------------------------


def test_stop_keeps_the_first_reason_and_a_cancel_key_stops_too(
    batch_store: BatchStore, redis_client: redis.Redis
) -> None:
    batch_store.open("job_s", 1, total=10, shards=1, max_failures=0)
    assert batch_store.stopping("job_s") is None
    batch_store.stop("job_s", "failure_rate")
    batch_store.stop("job_s", "canceled")
    assert batch_store.expect("job_s").stop == "failure_rate"
    assert batch_store.stopping("job_s") == "failure_rate"

    batch_store.open("job_k", 1, total=10, shards=1, max_failures=0)
    redis_client.set(cancel_key("job_k"), "1")
    assert batch_store.stopping("job_k") == "canceled"
    assert batch_store.expect("job_k").stop is None, "the cancel key alone writes no stop reason"
    redis_client.delete(cancel_key("job_k"))
    assert batch_store.stopping("job_k") is None


# ---- the finalizer's claim ------------------------------------------------------------------------------------


def test_the_finalizer_claim_is_exclusive_lapses_and_is_released(
    batch_store: BatchStore, short_batch_store: BatchStore, redis_client: redis.Redis
) -> None:
    assert not short_batch_store.finalizer_live("job_z")
    assert race(8, lambda _n: short_batch_store.claim_finalizer("job_z")).count(True) == 1
    assert short_batch_store.finalizer_live("job_z")
    assert not batch_store.claim_finalizer("job_z")

    time.sleep(LAPSE)
    assert not short_batch_store.finalizer_live("job_z"), "a dead finalizer's claim lapses"
    assert batch_store.claim_finalizer("job_z")
    assert not short_batch_store.claim_finalizer("job_z")
    batch_store.release_finalizer("job_z")
    assert not batch_store.finalizer_live("job_z")
    assert short_batch_store.claim_finalizer("job_z")

    final = batch_key("job_z") + ":final"
    batch_store.release_finalizer("job_z")
    assert batch_store.claim_finalizer("job_z")
    redis_client.pexpire(final, 500)
    batch_store.renew_finalizer("job_z")
    assert redis_client.pttl(final) > (LONG_LEASE - 5) * 1000, "renewing restores the whole lease"
