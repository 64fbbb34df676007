"""The exposition of ``api.metrics``, read back with prometheus-client's own parser: the cluster's families from a
statistics snapshot, and the per-process HTTP metrics of a small Flask app."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, abort
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from api.metrics import UNMATCHED, HttpMetrics, families
from tasks.stats import QUEUE_WAIT_BUCKETS, RUNTIME_BUCKETS, Histogram, Snapshot


class Fixed(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        return families({"interactive": 3, "io": 0}, self.snap)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_cluster_families_carry_every_label_value_of_the_snapshot() -> None:
    waits = {
        "segment": Histogram([(b, 1 if b >= 0.5 else 0) for b in QUEUE_WAIT_BUCKETS], 0.4),
        "embed": Histogram.from_hash({}, QUEUE_WAIT_BUCKETS),
    }
    snap = Snapshot(
        entered={"queued": 2, "failed": 0},
        running={"segment": 1, "embed": 0},
        queue_waits=waits,
        run_times={"segment": Histogram.from_hash({}, RUNTIME_BUCKETS)},
        embeddings={"memory": 4, "shared": 0, "miss": 2},
        batch_items={"succeeded": 5, "failed": 1, "not_run": 0},
        deliveries={"delivered": 1, "retrying": 0, "gone": 0, "exhausted": 0},
        workers={"interactive": 2, "io": 0},
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(snap))
    got = samples(registry)

    assert got[("samq_queue_depth", (("queue", "interactive"),))] == 3
    assert got[("samq_workers_alive", (("queue", "io"),))] == 0
    assert got[("samq_jobs_running", (("type", "segment"),))] == 1
    assert got[("samq_jobs_total", (("status", "failed"),))] == 0
    assert got[("samq_job_queue_wait_seconds_bucket", (("le", "0.5"), ("type", "segment")))] == 1
    assert got[("samq_job_queue_wait_seconds_bucket", (("le", "0.25"), ("type", "segment")))] == 0
    assert got[("samq_job_queue_wait_seconds_count", (("type", "embed"),))] == 0
    assert got[("samq_job_queue_wait_seconds_sum", (("type", "segment"),))] == 0.4
    assert got[("samq_job_run_seconds_bucket", (("le", "+Inf"), ("type", "segment")))] == 0
    assert got[("samq_embedding_cache_hits_total", (("tier", "memory"),))] == 4
    assert got[("samq_embedding_cache_hits_total", (("tier", "shared"),))] == 0
    assert ("samq_embedding_cache_hits_total", (("tier", "miss"),)) not in got
    assert got[("samq_embedding_cache_misses_total", ())] == 2
    assert got[("samq_batch_items_total", (("outcome", "not_run"),))] == 0
    assert got[("samq_webhook_deliveries_total", (("outcome", "exhausted"),))] == 0


def test_requests_are_counted_by_route_method_and_status() -> None:
    app = Flask("test")

    @app.get("/v1/jobs/<job_id>")
    def job(job_id: str) -> str:
        if job_id == "gone":
            abort(410)
        return job_id

    @app.route("/v1/jobs", methods=["GET", "POST"])
    def jobs() -> str:
        return "[]"

    registry = CollectorRegistry()
    http = HttpMetrics(registry)
    http.connect(app)
    http.prefill(app.url_map)
    before = samples(registry)
    assert before[("samq_http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/jobs")))] == 0
    assert (
        before[("samq_http_request_duration_seconds_count", (("method", "GET"), ("route", "/v1/jobs/<job_id>")))] == 0
    )
    assert not [name for name, _ in before if name == "samq_http_requests_total"]

    client = app.test_client()
    for path in ("/v1/jobs/a", "/v1/jobs/b", "/v1/jobs/gone", "/nowhere"):
        client.get(path)
    client.delete("/v1/jobs")
    got = samples(registry)

    def count(route: str, method: str, status: str) -> float:
        return got[("samq_http_requests_total", (("method", method), ("route", route), ("status", status)))]

    assert count("/v1/jobs/<job_id>", "GET", "200") == 2
    assert count("/v1/jobs/<job_id>", "GET", "410") == 1
    assert count(UNMATCHED, "GET", "404") == 1
    assert count(UNMATCHED, "DELETE", "405") == 1
    latency = ("samq_http_request_duration_seconds_count", (("method", "GET"), ("route", "/v1/jobs/<job_id>")))
    assert got[latency] == 3
    assert got[("samq_http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/jobs")))] == 0


def test_the_sample_grafana_dashboard_charts_every_metric_and_only_those() -> None:
    dashboard = json.loads((Path(__file__).parents[3] / "deploy" / "grafana" / "samq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in re.findall(r"\bsamq_\w+", e)}

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(Snapshot({}, {}, {}, {}, {}, {}, {}, {})))
    HttpMetrics(registry)
    text = generate_latest(registry).decode()
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)}
    assert used == exported, "the panels chart every metric /metrics exports, and nothing else"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"} == {"${datasource}"}
