"""A batch's fan-out state (tasks.batch_store) against a real Redis server: once-only counts, one finalizer,
shard leases, stopping, and the reconcile pass over a real job store."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis

from api.embedded import redis_server
from tasks import batch_store
from tasks.batch_store import BatchContext, BatchState, BatchStore, batch_key, reconcile
from tasks.jobs import Job, JobResult, JobStatus, new_job
from tasks.settings import QueueSettings
from tasks.specs import BatchSpec
from tasks.store import JobStore, cancel_key, connect

pytestmark = pytest.mark.integration

T = TypeVar("T")
TTL = 3600
LONG = 30.0
"""A lease that stays live for the whole test."""
SHORT = 0.2
"""A lease that lapses after a short sleep."""
LAPSE = SHORT + 0.15
BOX = {"x0": 1, "y0": 1, "x1": 20, "y1": 20}
SEGMENT = {"type": "segment", "prompts": [{"box": BOX}]}
TRACK = {"type": "track", "objects": [{"id": 1, "box": BOX}]}
RESULT = JobResult(files=[], summary={"total": 0})


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis"), appendonly=False) as url:
        yield url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(QueueSettings(redis_url=redis_url))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store(client: redis.Redis) -> BatchStore:
    return BatchStore(client, TTL, LONG)


@pytest.fixture
def short(client: redis.Redis) -> BatchStore:
    """The same Redis state, but whatever this store claims lapses after SHORT seconds."""
    return BatchStore(client, TTL, SHORT)


def race(threads: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(0)`` … ``work(threads - 1)`` on as many threads, released together by a barrier."""
    barrier = threading.Barrier(threads)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[n] = work(n)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == threads, "a thread did not finish"
    return [results[n] for n in range(threads)]


# ---- open / close ---------------------------------------------------------------------------------------------


def test_open_records_the_shape_once_and_the_attempt_always(store: BatchStore, client: redis.Redis) -> None:
    assert store.state("job_a") is None
    with pytest.raises(LookupError):
        store.expect("job_a")
    assert store.open_batches() == []

    assert store.open("job_a", 1, total=40, shards=3, max_failures=2) is True
    assert store.expect("job_a") == BatchState(
        attempt=1, total=40, shards=3, shards_done=0, max_failures=2, succeeded=0, failed=0, stop=None
    )
    assert store.open_batches() == ["job_a"]
    assert 0 < client.ttl(batch_key("job_a")) <= TTL

    assert store.record("job_a", 0, {"status": "succeeded"}) == (1, 0)
    assert store.record("job_a", 1, {"status": "failed"}) == (1, 1)
    assert not store.complete_shard("job_a", 0)

    # The expanding attempt died and a second one re-opens (with whatever it would count now): the shape and the
    # counts of the first stay, only the attempt that owns the job moves on.
    assert store.open("job_a", 2, total=99, shards=9, max_failures=7) is False
    state = store.expect("job_a")
    assert state == BatchState(
        attempt=2, total=40, shards=3, shards_done=1, max_failures=2, succeeded=1, failed=1, stop=None
    )
    assert (state.done, state.complete) == (2, False)
    assert store.open_batches() == ["job_a"]

    assert store.open("job_b", 1, total=1, shards=1, max_failures=0) is True
    assert store.open_batches() == ["job_a", "job_b"]
    store.close("job_a")
    assert store.open_batches() == ["job_b"]
    # Closed is only off the reconcile list: the API still serves the counts and the item records.
    assert store.expect("job_a").succeeded == 1
    assert store.item("job_a", 0) == {"status": "succeeded"}
    store.close("job_a")  # twice is harmless
    assert store.open_batches() == ["job_b"]


def test_every_key_of_a_batch_expires(store: BatchStore, client: redis.Redis) -> None:
    store.open("job_t", 1, total=4, shards=2, max_failures=0)
    store.record("job_t", 0, {"status": "succeeded"})
    store.try_item("job_t", 1)
    store.complete_shard("job_t", 0)
    ttls = {suffix: client.ttl(batch_key("job_t") + suffix) for suffix in ("", ":items", ":tries", ":done")}
    assert all(0 < ttl <= TTL for ttl in ttls.values()), ttls


# ---- items ----------------------------------------------------------------------------------------------------


def test_each_item_is_counted_once_when_8_threads_record_the_same_50(store: BatchStore) -> None:
    total, threads = 60, 8
    recorded = [i for i in range(total) if i % 6 != 5]  # 50 items; every sixth is never recorded
    unrecorded = [i for i in range(total) if i % 6 == 5]
    assert len(recorded) == 50

    def outcome(index: int) -> str:
        return "failed" if index % 4 == 0 else "succeeded"

    store.open("job_r", 1, total=total, shards=4, max_failures=total)

    def record_all(n: int) -> list[tuple[int, tuple[int, int] | None]]:
        order = recorded.copy()
        random.Random(n).shuffle(order)
        return [(i, store.record("job_r", i, {"status": outcome(i), "by": n})) for i in order]

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
    state = store.expect("job_r")
    assert (state.succeeded, state.failed, state.done) == (50 - failed, failed, 50)

    # A duplicate (a shard run twice, now with another outcome) counts nothing and changes no record.
    assert store.record("job_r", 0, {"status": "succeeded", "by": 99}) is None
    assert store.record("job_r", 1, {"status": "failed", "by": 99}) is None
    assert store.expect("job_r") == state

    assert store.pending("job_r", list(range(total))) == unrecorded
    assert store.pending("job_r", [59, 0, 5, 1]) == [59, 5]
    assert store.pending("job_r", []) == []

    listed = list(store.items("job_r", total, page=7))
    assert [index for index, _ in listed] == list(range(total))
    for index, record in listed:
        if index in unrecorded:
            assert record is None, index
        else:
            assert record == {"status": outcome(index), "by": winners[index][0]}, index
            assert store.item("job_r", index) == record
    assert store.item("job_r", 5) is None


def test_try_item_counts_every_attempt(store: BatchStore) -> None:
    store.open("job_y", 1, total=2, shards=1, max_failures=0)
    assert sorted(race(6, lambda _n: store.try_item("job_y", 0))) == [1, 2, 3, 4, 5, 6]
    assert store.try_item("job_y", 1) == 1


# ---- one finalizer --------------------------------------------------------------------------------------------


def test_exactly_one_finalizer_when_20_shards_complete_on_80_racing_threads(store: BatchStore) -> None:
    shards, per_shard = 20, 4
    store.open("job_f", 1, total=shards * 16, shards=shards, max_failures=0)

    def complete(n: int) -> tuple[bool, int]:
        last = store.complete_shard("job_f", n % shards)
        return last, store.expect("job_f").shards_done

    results = race(shards * per_shard, complete)
    finalizers = [done for last, done in results if last]
    assert finalizers == [shards], "exactly one call finalizes, seeing every shard done"
    state = store.expect("job_f")
    assert state.shards_done == shards and state.complete
    assert not any(store.complete_shard("job_f", s) for s in range(shards)), "a late duplicate never finalizes"


def test_the_finalizer_is_the_call_that_completes_the_last_shard(store: BatchStore) -> None:
    shards, per_shard = 20, 4
    store.open("job_g", 1, total=shards, shards=shards, max_failures=0)
    last_shard = 13
    others = [s for s in range(shards) if s != last_shard]

    first = race(len(others) * per_shard, lambda n: store.complete_shard("job_g", others[n % len(others)]))
    assert not any(first), "no call finalizes while a shard is still running"
    state = store.expect("job_g")
    assert (state.shards_done, state.complete) == (shards - 1, False)

    last = race(per_shard, lambda _n: store.complete_shard("job_g", last_shard))
    assert sorted(last) == [False] * (per_shard - 1) + [True]
    assert store.expect("job_g").complete


# ---- shard leases ---------------------------------------------------------------------------------------------


def test_shard_leases_lapse_and_are_taken_back_by_exactly_one_caller(store: BatchStore, short: BatchStore) -> None:
    store.open("job_l", 1, total=64, shards=4, max_failures=0)
    assert short.claim_shard("job_l", 0)
    assert short.claim_shard("job_l", 1)
    assert store.claim_shard("job_l", 2)
    assert not store.claim_shard("job_l", 0), "a live lease is not claimed twice"
    assert not short.claim_shard("job_l", 2)
    assert not store.complete_shard("job_l", 3)
    assert not store.claim_shard("job_l", 3), "a done shard is never claimed again"
    assert short.renew_shard("job_l", 0)
    assert store.lapsed_shards() == []
    assert not store.take_back("job_l", 0), "a live lease is not taken back"
    assert not store.take_back("job_l", 3), "nor one that does not exist"

    time.sleep(LAPSE)
    assert sorted(store.lapsed_shards()) == [("job_l", 0), ("job_l", 1)]
    assert race(6, lambda _n: store.take_back("job_l", 0)).count(True) == 1
    assert store.lapsed_shards() == [("job_l", 1)]
    assert not store.renew_shard("job_l", 0), "the lost worker learns that its lease is gone"
    assert not store.take_back("job_l", 0)

    # The re-sent shard claims it afresh.
    assert store.claim_shard("job_l", 0)
    assert not short.claim_shard("job_l", 0)
    assert store.renew_shard("job_l", 0)

    # Completing a shard drops its lease: it is neither renewed, lapsed nor claimable.
    assert not store.complete_shard("job_l", 0)
    assert not store.renew_shard("job_l", 0)
    assert not store.claim_shard("job_l", 0)

    # Releasing a shard (it stopped, or ran out of time) leaves it claimable.
    store.release_shard("job_l", 2)
    assert not store.renew_shard("job_l", 2)
    assert store.claim_shard("job_l", 2)
    assert store.lapsed_shards() == [("job_l", 1)]


def test_racing_claims_of_one_shard_give_one_lease(store: BatchStore) -> None:
    store.open("job_c", 1, total=16, shards=1, max_failures=0)
    assert race(8, lambda _n: store.claim_shard("job_c", 0)).count(True) == 1


# ---- stopping -------------------------------------------------------------------------------------------------


def test_stop_keeps_the_first_reason_and_a_cancel_key_stops_too(store: BatchStore, client: redis.Redis) -> None:
    store.open("job_s", 1, total=10, shards=1, max_failures=0)
    assert store.stopping("job_s") is None
    store.stop("job_s", "failure_rate")
    store.stop("job_s", "canceled")
    assert store.expect("job_s").stop == "failure_rate"
    assert store.stopping("job_s") == "failure_rate"

    store.open("job_k", 1, total=10, shards=1, max_failures=0)
    client.set(cancel_key("job_k"), "1")
    assert store.stopping("job_k") == "canceled"
    assert store.expect("job_k").stop is None, "the cancel key alone writes no stop reason"
    client.delete(cancel_key("job_k"))
    assert store.stopping("job_k") is None


# ---- the finalizer's claim ------------------------------------------------------------------------------------


def test_the_finalizer_claim_is_exclusive_lapses_and_is_released(
    store: BatchStore, short: BatchStore, client: redis.Redis
) -> None:
    assert not short.finalizer_live("job_z")
    assert race(8, lambda _n: short.claim_finalizer("job_z")).count(True) == 1
    assert short.finalizer_live("job_z")
    assert not store.claim_finalizer("job_z")

    time.sleep(LAPSE)
    assert not short.finalizer_live("job_z"), "a dead finalizer's claim lapses"
    assert store.claim_finalizer("job_z")
    assert not short.claim_finalizer("job_z")
    store.release_finalizer("job_z")
    assert not store.finalizer_live("job_z")
    assert short.claim_finalizer("job_z")

    final = batch_key("job_z") + ":final"
    store.release_finalizer("job_z")
    assert store.claim_finalizer("job_z")
    client.pexpire(final, 500)
    store.renew_finalizer("job_z")
    assert client.pttl(final) > (LONG - 5) * 1000, "renewing restores the whole lease"


# ---- reconcile ------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    shards: list[tuple[str, int, bool]] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


@pytest.fixture
def jobs(client: redis.Redis, redis_url: str) -> JobStore:
    return JobStore(client, QueueSettings(redis_url=redis_url))


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def ctx(store: BatchStore, sent: Sent) -> BatchContext:
    return BatchContext(store=store, send_shard=lambda j, s, videos: sent.shards.append((j, s, videos)), list_s3=None)


def reconcile_pass(jobs: JobStore, ctx: BatchContext, sent: Sent) -> None:
    reconcile(jobs, ctx, sent.finalized.append)


def running_batch(jobs: JobStore, store: BatchStore, template: dict[str, Any] = SEGMENT, shards: int = 2) -> Job:
    """A batch job in its first attempt that fanned out ``shards`` shards of 16 items."""
    spec = BatchSpec.model_validate({"type": "batch", "template": template, "inputs": {"items": [{"upload": "upl_a"}]}})
    job = new_job(spec, "t1")
    jobs.create(job)
    started = jobs.start(job.id)
    assert started is not None and started.status == JobStatus.RUNNING and started.attempts == 1
    store.open(job.id, started.attempts, total=shards * 16, shards=shards, max_failures=0)
    return started


def test_reconcile_resends_a_lapsed_shard_once_and_drops_those_of_ended_jobs(
    jobs: JobStore, store: BatchStore, short: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    images = running_batch(jobs, store, shards=3)
    videos = running_batch(jobs, store, TRACK, shards=3)
    ended = running_batch(jobs, store, shards=3)
    assert jobs.succeed(ended.id, 1, RESULT)
    assert short.claim_shard(images.id, 1)
    assert short.claim_shard(videos.id, 0)
    assert short.claim_shard(ended.id, 2)
    assert short.claim_shard("job_expired", 0)  # its job record is gone
    assert store.claim_shard(images.id, 2)  # a live worker

    time.sleep(LAPSE)
    reconcile_pass(jobs, ctx, sent)
    assert sorted(sent.shards) == sorted([(images.id, 1, False), (videos.id, 0, True)])
    assert sent.finalized == []
    assert store.lapsed_shards() == []
    assert store.open_batches() == sorted([images.id, videos.id]), "the ended job's batch is closed"

    reconcile_pass(jobs, ctx, sent)
    assert len(sent.shards) == 2, "a shard is re-sent once"
    assert store.claim_shard(images.id, 1), "the re-sent shard can claim it"
    assert not store.claim_shard(images.id, 2), "the live worker's lease was left alone"


def test_racing_reconcile_passes_resend_once_and_finalize_once(
    jobs: JobStore, store: BatchStore, short: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    """Every worker runs the reconcile pass on its own timer: passes racing each other still act once."""
    lost_shard = running_batch(jobs, store)
    lost_finalizer = running_batch(jobs, store)
    assert short.claim_shard(lost_shard.id, 0)
    assert not store.complete_shard(lost_finalizer.id, 0)
    assert store.complete_shard(lost_finalizer.id, 1)
    time.sleep(LAPSE)

    race(6, lambda _n: reconcile_pass(jobs, ctx, sent))
    assert sent.shards == [(lost_shard.id, 0, False)]
    assert sent.finalized == [lost_finalizer.id]


def test_reconcile_finalizes_a_complete_batch_once_per_nudge_window(
    jobs: JobStore, store: BatchStore, ctx: BatchContext, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_store, "NUDGE_SECONDS", 1)
    job = running_batch(jobs, store)
    unfinished = running_batch(jobs, store)
    assert not store.complete_shard(job.id, 0)
    assert store.complete_shard(job.id, 1)  # ... and the finalizer died before it claimed the batch
    assert not store.complete_shard(unfinished.id, 0)

    reconcile_pass(jobs, ctx, sent)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id], "two passes in one window send one finalize"
    time.sleep(1.2)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id, job.id], "the next window sends it again (that finalize was lost too)"
    assert sent.shards == []
    assert store.open_batches() == sorted([job.id, unfinished.id])


def test_reconcile_leaves_a_live_finalizer_alone(
    jobs: JobStore, store: BatchStore, short: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, store, shards=1)
    assert store.complete_shard(job.id, 0)
    assert short.claim_finalizer(job.id)

    reconcile_pass(jobs, ctx, sent)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == []

    time.sleep(LAPSE)  # the finalizer died: its claim lapsed
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]


def test_reconcile_finalizes_a_stopped_batch_before_its_shards_are_done(
    jobs: JobStore, store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, store, shards=3)
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == []
    store.stop(job.id, "failure_rate")
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]
    assert store.expect(job.id).stop == "failure_rate"


def test_reconcile_stops_and_finalizes_a_canceled_batch(
    jobs: JobStore, store: BatchStore, ctx: BatchContext, sent: Sent
) -> None:
    job = running_batch(jobs, store, shards=4)
    assert not store.complete_shard(job.id, 0)
    flagged = jobs.request_cancel(job.id, "t1")
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert store.stopping(job.id) == "canceled", "the shards' checkpoints see the cancel key at once"
    assert store.expect(job.id).stop is None

    reconcile_pass(jobs, ctx, sent)
    assert store.expect(job.id).stop == "canceled"
    assert sent.finalized == [job.id]
    reconcile_pass(jobs, ctx, sent)
    assert sent.finalized == [job.id]
    assert store.open_batches() == [job.id], "open until the finalizer ends the job"


def test_reconcile_closes_the_batches_of_ended_jobs(
    jobs: JobStore, store: BatchStore, ctx: BatchContext, sent: Sent, client: redis.Redis
) -> None:
    succeeded = running_batch(jobs, store, shards=1)
    assert store.complete_shard(succeeded.id, 0)
    assert store.record(succeeded.id, 0, {"status": "succeeded"}) == (1, 0)
    store.try_item(succeeded.id, 0)
    assert store.claim_finalizer(succeeded.id)
    assert jobs.succeed(succeeded.id, 1, RESULT)
    store.release_finalizer(succeeded.id)  # the finalizer ended the job but died before it closed the batch
    canceled = running_batch(jobs, store)
    assert jobs.cancel_running(canceled.id, 1)
    running = running_batch(jobs, store)
    store.open("job_expired", 1, total=1, shards=1, max_failures=0)

    reconcile_pass(jobs, ctx, sent)
    assert store.open_batches() == [running.id]
    assert sent.finalized == [] and sent.shards == []
    # Closing drops the bookkeeping but keeps what the API serves.
    assert store.item(succeeded.id, 0) == {"status": "succeeded"}
    assert store.expect(succeeded.id).succeeded == 1
    assert not client.exists(batch_key(succeeded.id) + ":tries")
