"""Racing threads and lease timings: how the store tests prove that concurrent callers count once and claim once,
and that a lease lapses when its holder stops renewing it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal, TypeVar

from tasks.batch_store import ItemRecord

T = TypeVar("T")
BATCH_TTL = 3600
LONG_LEASE = 30.0
"""A lease that stays live for the whole test."""
SHORT_LEASE = 0.2
"""A lease that lapses after a short sleep."""
LAPSE = SHORT_LEASE + 0.15
"""How long to sleep for a short lease to lapse."""


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


def rec(status: Literal["succeeded", "failed"], by: int = 0) -> ItemRecord:
    """An item's record; ``by`` tells which writer's record was kept."""
    return ItemRecord(status=status, name=f"written by {by}")
