"""Subscriptions to Redis pub/sub channels that outlive one wait: a ``Prefer: wait`` caller costs no new connection.

A status change publishes the job's record on the job's channel (``JobStore._on_status_change``); a caller waiting for
the job subscribes to it. redis-py's ``PubSub.close`` disconnects the subscription's connection, and the pool hands
that connection out again: closing a subscription after each wait made every waited request cost the process a new
TCP connection and its handshake, paid by whichever Redis command came next (0.3 ms alone, about 1 ms measured under a
job's load). A finished wait unsubscribes instead and leaves the subscription, still connected, for the next.

Messages still buffered from a channel a subscription left (published just before its ``UNSUBSCRIBE``) are skipped by
the next user: each wait takes only its own channel's messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import redis
from redis.client import PubSub

IDLE_SUBSCRIPTIONS = 64
"""Subscriptions kept for reuse at most (one per wait in progress; the API caps those)."""

NextMessage = Callable[[float], str | None]
"""Waits up to the seconds given for the channel's next message; its data, or None (nothing came in time)."""


class Subscriptions:
    """Reusable pub/sub subscriptions on ``client`` (which must decode responses). Thread-safe."""

    def __init__(self, client: redis.Redis, keep: int = IDLE_SUBSCRIPTIONS) -> None:
        self._redis = client
        self._keep = keep
        self._idle: list[PubSub] = []
        self._lock = threading.Lock()

    @contextmanager
    def subscribed(self, channel: str) -> Iterator[NextMessage]:
        """Subscribed to ``channel`` for the block, which reads its messages with the function it is given. A block
        left by an error closes the subscription (its connection's state is unknown)."""
        with self._lock:
            pubsub = self._idle.pop() if self._idle else self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel)
            yield lambda timeout: _next_message(pubsub, channel, timeout)
            pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]
        except BaseException:
            pubsub.close()
            raise
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(pubsub)
                return
        pubsub.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pubsub in idle:
            pubsub.close()


def _next_message(pubsub: PubSub, channel: str, timeout: float) -> str | None:
    message = pubsub.get_message(timeout=timeout)
    if message is None or message["type"] != "message" or message["channel"] != channel:
        return None  # a subscription notice, or a message of a channel this subscription served before
    return cast(str, message["data"])
