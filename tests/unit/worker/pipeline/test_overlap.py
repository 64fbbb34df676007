"""Read-ahead and write-behind (``worker.pipeline.overlap``): reads taken once and bounded, finishes one at a time."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from worker.pipeline.overlap import ReadAhead, WriteBehind, media_key


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(4)


def test_a_read_started_ahead_is_taken_once_and_runs_once(pool: ThreadPoolExecutor) -> None:
    calls: list[str] = []
    ahead = ReadAhead(pool.submit)

    def read() -> bytes:
        calls.append("read")
        return b"image"

    ahead.start("k", read)
    ahead.start("k", read)  # kept already: not read twice
    taken = ahead.take("k")
    assert taken is not None and taken.result() == b"image"
    assert ahead.take("k") is None
    assert calls == ["read"]


def test_a_failed_read_hands_its_error_to_the_taker(pool: ThreadPoolExecutor) -> None:
    ahead = ReadAhead(pool.submit)

    def read() -> bytes:
        raise FileNotFoundError("gone")

    ahead.start("k", read)
    taken = ahead.take("k")
    assert taken is not None
    with pytest.raises(FileNotFoundError):
        taken.result()


def test_reads_nobody_takes_are_dropped_oldest_first(pool: ThreadPoolExecutor) -> None:
    started: list[Future[bytes]] = []

    def start(read: object) -> Future[bytes]:  # never runs the read: the futures stay pending
        started.append(Future())
        return started[-1]

    ahead = ReadAhead(start, capacity=2)
    for key in ("a", "b", "c"):
        ahead.start(key, lambda: b"")
    assert "a" not in ahead and "b" in ahead and "c" in ahead
    assert started[0].cancelled()  # a dropped read that had not started never runs
    ahead.keep("d", b"bytes")
    assert ahead.take("b") is None
    kept = ahead.take("d")
    assert kept is not None and kept.result() == b"bytes"


def test_media_keys_name_the_tenant_and_the_reference() -> None:
    assert media_key("t1", '{"upload":"u"}') != media_key("t2", '{"upload":"u"}')


def test_finishes_run_behind_the_caller_one_at_a_time_in_order() -> None:
    behind = WriteBehind()
    order: list[str] = []
    first_running = threading.Event()
    release = threading.Event()

    def first() -> None:
        first_running.set()
        release.wait(5)
        order.append("first")

    behind.submit(first)  # returns at once: the caller goes on computing
    assert first_running.wait(5)
    order.append("caller")
    threading.Timer(0.2, release.set).start()
    started = time.monotonic()
    behind.submit(lambda: order.append("second"))  # waits for the first: one behind at most
    assert time.monotonic() - started >= 0.15
    behind.drain()
    assert order == ["caller", "first", "second"]


def test_a_finish_that_raises_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    behind = WriteBehind()
    done: list[bool] = []

    def broken() -> None:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR):
        behind.submit(broken)
        behind.submit(lambda: done.append(True))
        behind.drain()
    assert done == [True]
    assert "reaper runs it again" in caplog.text
