"""Prometheus metrics read from Redis at scrape time, so every API replica reports the whole cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks.names import JOB_TYPES, Queue
from tasks.store import ENTERED, RUNTIME_BUCKETS, runtime_key

# kombu's Redis transport keeps one list per priority step: the queue name, then name + "\x06\x16" + step.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class QueueCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("samq_queue_depth", "Messages waiting per queue.", labels=["queue"])
        with self._redis.pipeline(transaction=False) as pipe:
            for queue in Queue:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(queue.value + suffix)
            lengths = pipe.execute()
        for i, queue in enumerate(Queue):
            depth.add_metric([queue.value], sum(lengths[i * len(PRIORITY_SUFFIXES) : (i + 1) * len(PRIORITY_SUFFIXES)]))
        yield depth

        entered = CounterMetricFamily("samq_jobs", "Jobs that entered each status.", labels=["status"])
        counts = cast(dict[str, str], self._redis.hgetall(ENTERED))
        for status, count in sorted(counts.items()):
            entered.add_metric([status], float(count))
        yield entered

        runtime = HistogramMetricFamily("samq_job_run_seconds", "Run time of finished jobs.", labels=["type"])
        for job_type in JOB_TYPES:
            stats = cast(dict[str, str], self._redis.hgetall(runtime_key(job_type)))
            buckets = [(_le(bound), float(stats.get(repr(bound), 0))) for bound in RUNTIME_BUCKETS]
            runtime.add_metric([job_type], buckets, float(stats.get("sum", 0)))
        yield runtime


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
