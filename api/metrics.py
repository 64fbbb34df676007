"""Prometheus metrics: the cluster's, read from Redis at scrape time (so every API replica reports the whole
cluster), and this API process's own HTTP requests.

Every labelled series is present from the first scrape, at zero: every status, job type, queue and outcome, and
every route's latency histogram (a request counter gains a series at a route's first answer with each status).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Flask, Response, g, request
from flask.sansio.app import App
from flask.signals import request_finished, request_started
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from werkzeug.routing import Map

from tasks import stats
from tasks.names import Queue

# kombu's Redis transport keeps one list per priority step: the queue name, then name + "\x06\x16" + step.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))
"""Upper bounds (seconds) of the request latency histogram (``Prefer: wait`` holds a request up to 60 s)."""
UNMATCHED = "unmatched"
"""The ``route`` of a request that matched no route (404, 405)."""


class ClusterCollector(Collector):
    """The cluster's numbers, read from Redis at each scrape: two round trips (queue lengths, ``tasks.stats``)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def collect(self) -> Iterator[Metric]:
        with self._redis.pipeline(transaction=False) as pipe:
            for queue in Queue:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(queue.value + suffix)
            lengths = pipe.execute()
        steps = len(PRIORITY_SUFFIXES)
        depths = {queue.value: sum(lengths[i * steps : (i + 1) * steps]) for i, queue in enumerate(Queue)}
        yield from families(depths, stats.read(self._redis))


def families(depths: dict[str, int], snap: stats.Snapshot) -> Iterator[Metric]:
    """The metric families of the queues' ``depths`` and a statistics snapshot."""
    yield _gauge("samq_queue_depth", "Messages waiting per queue.", "queue", depths)
    yield _gauge(
        "samq_workers_alive", "Workers whose heartbeat is current, per queue they consume.", "queue", snap.workers
    )
    yield _gauge("samq_jobs_running", "Jobs running now, per job type.", "type", snap.running)
    yield _counter("samq_jobs", "Jobs that entered each status.", "status", snap.entered)
    yield _histogram(
        "samq_job_queue_wait_seconds", "Wait of jobs' first attempts, created to started.", snap.queue_waits
    )
    yield _histogram("samq_job_run_seconds", "Run time of finished jobs, started to finished.", snap.run_times)
    yield _counter("samq_webhook_deliveries", "Webhook delivery attempts, by outcome.", "outcome", snap.deliveries)
    yield _counter("samq_batch_items", "Batch items that ended, by outcome.", "outcome", snap.batch_items)
    hits = {tier: n for tier, n in snap.embeddings.items() if tier != "miss"}
    yield _counter(
        "samq_embedding_cache_hits",
        "Succeeded image jobs whose embedding was cached, by tier (memory: the worker's, shared: object storage).",
        "tier",
        hits,
    )
    misses = CounterMetricFamily("samq_embedding_cache_misses", "Succeeded image jobs that encoded their image.")
    misses.add_metric([], float(snap.embeddings.get("miss", 0)))
    yield misses


class HttpMetrics:
    """This process's requests, from Flask's request signals: a counter by route (the URL rule), method and status,
    and a latency histogram by route and method, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "samq_http_requests", "HTTP requests answered by this API process.", ["route", "method", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "samq_http_request_duration_seconds", "Time to answer HTTP requests (to the response's headers).",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=registry,
        )  # fmt: skip

    def connect(self, app: App) -> None:
        """Count ``app``'s requests from now on."""
        request_started.connect(self.started, app, weak=False)
        request_finished.connect(self.finished, app, weak=False)

    def prefill(self, url_map: Map) -> None:
        """A latency series for every route and method of ``url_map``, at zero until its first request."""
        for rule in url_map.iter_rules():
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                self.latency.labels(rule.rule, method)

    def started(self, _sender: Flask, **_extra: Any) -> None:
        g.samq_request_started = time.perf_counter()

    def finished(self, _sender: Flask, response: Response, **_extra: Any) -> None:
        started: float | None = g.get("samq_request_started")
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        self.requests.labels(route, request.method, str(response.status_code)).inc()
        if started is not None:
            self.latency.labels(route, request.method).observe(time.perf_counter() - started)


def install(app: App, client: redis.Redis) -> HttpMetrics:
    """Count ``app``'s requests and collect the cluster's numbers from ``client``, in a registry of the app's own
    (``app.extensions["samq_metrics"]``), which ``GET /metrics`` serves."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(client))
    http = HttpMetrics(registry)
    http.connect(app)
    app.extensions["samq_metrics"] = http
    return http


def _gauge(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, number in values.items():
        family.add_metric([value], float(number))
    return family


def _counter(name: str, documentation: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, number in values.items():
        family.add_metric([value], float(number))
    return family


def _histogram(name: str, documentation: str, by_type: dict[str, stats.Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["type"])
    for job_type, histogram in by_type.items():
        buckets = [(_le(bound), float(count)) for bound, count in histogram.buckets]
        family.add_metric([job_type], buckets, histogram.total)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
