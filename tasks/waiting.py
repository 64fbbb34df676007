"""Waiting for a job's end (``Prefer: wait``) on Redis pub/sub, without a connection per wait.

A job that becomes terminal publishes its record on the job's channel (``JobStore._on_status_change``); a caller
waiting for it subscribes to that channel. A subscription taken before the job is created (``JobStore.watching``)
misses nothing, so its wait reads nothing first; one taken later reads the record once after subscribing.

redis-py's ``PubSub.close`` disconnects the subscription's connection, and the pool hands that connection out again:
closing a subscription after each wait made every waited request cost the process a new TCP connection and its
handshake, paid by whichever Redis command came next (0.3 ms alone, about 1 ms measured under a job's load). A
finished wait unsubscribes instead and leaves the subscription, still connected, for the next. Messages still
buffered from a channel a subscription left (published just before its ``UNSUBSCRIBE``) are skipped by the next
user: each wait takes only its own channel's messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import redis
from redis.client import PubSub

from tasks.jobs import Job

IDLE_SUBSCRIPTIONS = 64
"""Subscriptions kept for reuse at most (one per wait in progress; the API caps those)."""

NextMessage = Callable[[float], str | None]
"""Waits up to the seconds given for the channel's next message; its data, or None (nothing came in time)."""


class Watch:
    """A job's channel, subscribed: :meth:`wait` for the job's end."""

    def __init__(self, read: Callable[[], Job | None], next_message: NextMessage) -> None:
        self._read = read
        self._next_message = next_message

    def wait(self, timeout: float, known: Job | None = None) -> Job | None:
        """Block until the job is terminal or ``timeout`` passes; returns the latest record. ``known``: the job as
        created after this watch began (nothing is read first); else the record is read once."""
        deadline = time.monotonic() + timeout
        job = known if known is not None else self._read()
        while job is not None and not job.status.is_terminal:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._read()  # not terminal yet: as it is now (running, say)
            if (raw := self._next_message(min(left, 1.0))) is not None:
                job = Job.model_validate_json(raw)
        return job


class Subscriptions:
    """Reusable pub/sub subscriptions on ``client`` (which must decode responses). Thread-safe."""

    def __init__(self, client: redis.Redis, keep: int = IDLE_SUBSCRIPTIONS) -> None:
        self._redis = client
        self._keep = keep
        self._idle: list[PubSub] = []
        self._lock = threading.Lock()

    @contextmanager
    def subscribed(self, channel: str) -> Iterator[NextMessage]:
        """Subscribed to ``channel`` for the block, which reads its messages with the function it is given. A
        subscription whose Redis calls failed is closed (its connection's state is unknown); any other is kept."""
        with self._lock:
            pubsub = self._idle.pop() if self._idle else self._redis.pubsub(ignore_subscribe_messages=True)
        healthy = [True]
        try:
            pubsub.subscribe(channel)
        except BaseException:
            pubsub.close()
            raise
        try:
            yield lambda timeout: _next_message(pubsub, channel, timeout, healthy)
        finally:
            self._give_back(pubsub, channel, healthy[0])

    def _give_back(self, pubsub: PubSub, channel: str, healthy: bool) -> None:
        if healthy:
            try:
                pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                pass
            else:
                with self._lock:
                    if len(self._idle) < self._keep:
                        self._idle.append(pubsub)
                        return
        pubsub.close()


def _next_message(pubsub: PubSub, channel: str, timeout: float, healthy: list[bool]) -> str | None:
    try:
        message = pubsub.get_message(timeout=timeout)
    except BaseException:
        healthy[0] = False
        raise
    if message is None or message["type"] != "message" or message["channel"] != channel:
        return None  # a subscription notice, or a message of a channel this subscription served before
    return cast(str, message["data"])
