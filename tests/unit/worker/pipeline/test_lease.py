"""Leases and the process's one renewal thread (``worker.pipeline.lease``)."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable

import pytest
import redis

from worker.pipeline.lease import CANCEL_POLL_SECONDS, JobCanceledError, Lease, LeaseLostError

INTERVAL = 0.02


def _lease(renew: Callable[[], bool], canceled: Callable[[], bool] = lambda: False, name: str = "job") -> Lease:
    return Lease(name, renew=renew, canceled=canceled, interval=INTERVAL)


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_lease_is_renewed_every_interval_while_it_runs_and_never_after() -> None:
    renewals: list[float] = []

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    with _lease(renew):
        _until(lambda: len(renewals) >= 5)
    stopped = len(renewals)
    time.sleep(INTERVAL * 5)
    assert len(renewals) == stopped
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert min(gaps) >= INTERVAL * 0.9


def test_leases_of_one_process_are_renewed_side_by_side() -> None:
    counts = {"a": 0, "b": 0}

    def renew(name: str) -> Callable[[], bool]:
        def once() -> bool:
            counts[name] += 1
            return True

        return once

    with _lease(renew("a"), name="a"):
        with _lease(renew("b"), name="b"):
            _until(lambda: counts["a"] >= 3 and counts["b"] >= 3)
        after_b = counts["b"]
        _until(lambda: counts["a"] >= 8)
    assert counts["b"] == after_b


def test_stop_waits_for_a_renewal_under_way() -> None:
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> bool:
        entered.set()
        release.wait(5)
        finished.set()
        return True

    lease = _lease(slow).start()
    assert entered.wait(5)
    stopper = threading.Thread(target=lease.stop)
    stopper.start()
    time.sleep(INTERVAL * 3)
    assert stopper.is_alive(), "stop returned while its renewal was still running"
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and finished.is_set()


def test_a_fenced_lease_raises_at_the_next_checkpoint_and_is_renewed_no_more() -> None:
    calls: list[int] = []

    def fenced() -> bool:
        calls.append(1)
        return False

    with _lease(fenced) as lease:
        _until(lambda: len(calls) == 1)
        time.sleep(INTERVAL * 4)
        assert len(calls) == 1
        with pytest.raises(LeaseLostError):
            lease.checkpoint()


def test_a_canceled_job_raises_at_the_checkpoint() -> None:
    with _lease(lambda: True, canceled=lambda: True) as lease, pytest.raises(JobCanceledError):
        lease.checkpoint()


def test_checkpoints_ask_at_most_once_per_poll_interval_and_see_a_cancel_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now, asked, canceled = [100.0], [0], [False]
    monkeypatch.setattr("worker.pipeline.lease.time.monotonic", lambda: now[0])

    def ask() -> bool:
        asked[0] += 1
        return canceled[0]

    lease = Lease("job", lambda: True, ask, INTERVAL, CANCEL_POLL_SECONDS, not_canceled_at=100.0)
    lease.checkpoint()  # the record read at start said "not canceled" just now: no round trip
    assert asked[0] == 0
    canceled[0] = True
    now[0] += CANCEL_POLL_SECONDS * 0.9
    lease.checkpoint()  # a cancel this recent is not asked about yet
    assert asked[0] == 0
    now[0] += CANCEL_POLL_SECONDS * 0.1
    with pytest.raises(JobCanceledError):
        lease.checkpoint()
    assert asked[0] == 1


def test_a_lease_that_knows_nothing_asks_at_its_first_checkpoint_then_every_poll_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now, asked = [100.0], [0]
    monkeypatch.setattr("worker.pipeline.lease.time.monotonic", lambda: now[0])

    def ask() -> bool:
        asked[0] += 1
        return False

    lease = Lease("job", lambda: True, ask, INTERVAL, CANCEL_POLL_SECONDS)
    for _ in range(10):  # checkpoints every 0.3 poll intervals for 3 intervals: asked at 0, 1.2, 2.4
        lease.checkpoint()
        now[0] += CANCEL_POLL_SECONDS * 0.3
    assert asked[0] == 3


def test_a_lease_without_a_poll_interval_asks_at_every_checkpoint() -> None:
    asked = [0]

    def ask() -> bool:
        asked[0] += 1
        return False

    lease = _lease(lambda: True, canceled=ask)  # a batch shard's: its own failed item can stop it at once
    for _ in range(3):
        lease.checkpoint()
    assert asked[0] == 3


@pytest.mark.parametrize("error", [redis.ConnectionError("down"), ValueError("a bug in a renew callable")])
def test_a_failing_renewal_is_tried_again_and_spares_the_other_leases(error: Exception) -> None:
    failures, others = [0], [0]

    def failing() -> bool:
        failures[0] += 1
        raise error

    def other() -> bool:
        others[0] += 1
        return True

    with _lease(failing, name="failing") as lease, _lease(other, name="other"):
        _until(lambda: failures[0] >= 3 and others[0] >= 3)
        lease.checkpoint()  # neither lost nor canceled: a renewal that failed is not a fenced attempt


def _renewed_in_child(results: multiprocessing.Queue[int]) -> None:
    count = [0]

    def renew() -> bool:
        count[0] += 1
        return True

    with _lease(renew):
        _until(lambda: count[0] >= 3)
    results.put(count[0])


def test_the_renewal_thread_starts_again_in_a_forked_pool_process() -> None:
    with _lease(lambda: True):  # the parent's thread runs: the fork below does not carry it over
        context = multiprocessing.get_context("fork")
        results: multiprocessing.Queue[int] = context.Queue()
        child = context.Process(target=_renewed_in_child, args=(results,))
        child.start()
        assert results.get(timeout=10) >= 3
        child.join(10)
        assert child.exitcode == 0
