"""Prometheus metrics read from Redis at scrape time, so every API replica reports the whole cluster."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks import stats
from tasks.names import Queue

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
        for status, count in sorted(stats.entered(self._redis).items()):
            entered.add_metric([status], float(count))
        yield entered

        runtime = HistogramMetricFamily("samq_job_run_seconds", "Run time of finished jobs.", labels=["type"])
        for job_type, times in stats.run_times(self._redis).items():
            buckets = [(_le(bound), float(count)) for bound, count in times.buckets]
            runtime.add_metric([job_type], buckets, times.total_seconds)
        yield runtime


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
