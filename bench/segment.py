"""The segment section: samq's overhead on a cache-hit segment job (a), and the embedding cache's saving (b).

(a) end to end from the client (``POST /v1/jobs`` with ``Prefer: wait``) minus the model's own time, next to a bare
Celery round trip on the same Redis and worker, interleaved, and an HTTP no-op (``GET /healthz``): the two p50s sum
to the floor a job's overhead is held against; (b) the worker time of a second job on an image over
the first's (which encodes it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from bench.jobs import (
    IMAGE_H,
    IMAGE_W,
    WAIT_SECONDS,
    BenchError,
    epoch,
    require_embedding,
    require_succeeded,
    synthetic_jpeg,
    upload,
)
from bench.own_work import measure_own_work, print_own_work
from bench.report import hardware_line, load_average, ms, pct, print_table_head, verdict
from samq.client import Client
from tasks.dispatch import Dispatcher
from tasks.names import Queue
from tests.support.stack import Stack

POINT = {"x": 410.0, "y": 384.0}  # inside the synthetic scene's ellipse
FRESH_IMAGES = 3  # K of criterion (b)
OVERHEAD_TARGET_MS = 25.0
FLOOR_RATIO_TARGET = 2.0  # issue 17: overhead p50 over the floor (HTTP no-op + bare Celery round trip, p50s)
SECOND_OVER_FIRST_TARGET = 0.10


@dataclass(frozen=True)
class SegmentOptions:
    model: str
    image_size: int
    repeats: int


class Timed:
    """One segment job as the client saw it, with the server's timestamps and the worker's timings."""

    def __init__(self, job: dict[str, Any], sent: float, received: float, e2e_ms: float) -> None:
        self.job = job
        self.sent, self.received = sent, received
        self.e2e_ms = e2e_ms
        summary = job["result"]["summary"]
        self.embedding: str = summary["embedding"]
        self.model_ms = float(summary["timings"]["model_ms"])
        self.total_ms = float(summary["timings"]["total_ms"])
        created, started, finished = (epoch(job[k]) for k in ("created_at", "started_at", "finished_at"))
        # Wall-clock stages (one host, one clock): client → API record → worker start → worker finish → client.
        self.stages = {
            "api_ingress_ms": (created - sent) * 1000,
            "dispatch_ms": (started - created) * 1000,
            "worker_ms": (finished - started) * 1000,
            "egress_ms": (received - finished) * 1000,
        }

    @property
    def overhead_ms(self) -> float:
        return self.e2e_ms - self.model_ms

    def raw(self) -> dict[str, Any]:
        return {
            "id": self.job["id"],
            "embedding": self.embedding,
            "e2e_ms": self.e2e_ms,
            "model_ms": self.model_ms,
            "total_ms": self.total_ms,
            "overhead_ms": self.overhead_ms,
            **self.stages,
            "sent_epoch": self.sent,
            "received_epoch": self.received,
        }


@dataclass
class Samples:
    """What the section measured: (a)'s interleaved series and (b)'s pairs of jobs per fresh image."""

    hits: list[Timed]
    pings: list[float]
    healthz: list[float]
    firsts: list[Timed]
    seconds: list[Timed]


@dataclass(frozen=True)
class Summary:
    """The figures the targets are checked on (recorded under ``"summary"``)."""

    overhead_p50_ms: float
    overhead_p90_ms: float
    ping_p50_ms: float
    ping_p90_ms: float
    overhead_over_ping: float
    healthz_p50_ms: float
    floor_ms: float
    overhead_over_floor: float
    first_total_ms_median: float
    second_total_ms_median: float
    second_over_first: float
    a_pass: bool
    b_pass: bool
    floor_pass: bool

    @classmethod
    def of(cls, samples: Samples) -> Summary:
        overhead = [t.overhead_ms for t in samples.hits]
        over_p50, ping_p50 = pct(overhead, 50), pct(samples.pings, 50)
        ratio = over_p50 / ping_p50
        healthz_p50 = pct(samples.healthz, 50)
        floor = healthz_p50 + ping_p50
        first_med = statistics.median(t.total_ms for t in samples.firsts)
        second_med = statistics.median(t.total_ms for t in samples.seconds)
        cache_ratio = second_med / first_med
        return cls(
            overhead_p50_ms=over_p50,
            overhead_p90_ms=pct(overhead, 90),
            ping_p50_ms=ping_p50,
            ping_p90_ms=pct(samples.pings, 90),
            overhead_over_ping=ratio,
            healthz_p50_ms=healthz_p50,
            floor_ms=floor,
            overhead_over_floor=over_p50 / floor,
            first_total_ms_median=first_med,
            second_total_ms_median=second_med,
            second_over_first=cache_ratio,
            a_pass=over_p50 <= OVERHEAD_TARGET_MS,  # the old "≤ 1.5× bare" was below the floor: withdrawn (issue 17)
            b_pass=cache_ratio <= SECOND_OVER_FIRST_TARGET,
            floor_pass=over_p50 / floor <= FLOOR_RATIO_TARGET,
        )


def segment_job(model: str, upload_id: str) -> dict[str, Any]:
    return {"type": "segment", "model": model, "image": {"upload": upload_id}, "prompts": [{"points": [POINT]}]}


def run_segment(client: Client, model: str, upload_id: str, expect: str | None) -> Timed:
    sent = time.time()
    started = time.perf_counter()
    job = client.submit(segment_job(model, upload_id), wait=WAIT_SECONDS)
    e2e_ms = (time.perf_counter() - started) * 1000
    received = time.time()
    require_succeeded(job)
    timed = Timed(job, sent, received, e2e_ms)
    require_embedding(job, timed.embedding, expect)
    return timed


def redis_connections(admin: redis.Redis) -> int:
    """Connections the stack's Redis has accepted so far (a process that drops and reopens them shows here)."""
    return int(admin.info("stats")["total_connections_received"])


def time_healthz(client: Client) -> float:
    """An HTTP round trip to the API that touches nothing else: the floor of any HTTP job submission."""
    started = time.perf_counter()
    client.request("GET", "/healthz")
    return (time.perf_counter() - started) * 1000


def time_ping(dispatcher: Dispatcher) -> float:
    started = time.perf_counter()
    answer = dispatcher.ping(Queue.INTERACTIVE, timeout=10)
    elapsed = (time.perf_counter() - started) * 1000
    if answer != "pong":
        raise BenchError(f"ping answered {answer!r}")
    return elapsed


def measure_segment(options: SegmentOptions, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    """(a) and (b) on the stack's ``interactive`` worker; prints the tables, returns the raw numbers."""
    client = Client(stack.api_url, timeout=WAIT_SECONDS + 10)
    dispatcher = stack.dispatcher()
    warm_image = synthetic_jpeg(seed=0)
    print_header(options, hw, len(warm_image))
    warm_upload = upload(client, warm_image)
    first = warm_up(client, dispatcher, options.model, warm_upload)
    with redis.Redis.from_url(stack.redis_url) as admin:  # one connection, counted in neither reading
        connections = redis_connections(admin)
        hits, pings, healthz = interleaved(client, dispatcher, options, warm_upload)
        connections = redis_connections(admin) - connections
    firsts, seconds = fresh_pairs(client, options.model)
    own = measure_own_work(stack, client, segment_job(options.model, warm_upload), hits[-1].job)
    print()
    samples = Samples(hits, pings, healthz, firsts, seconds)
    summary = Summary.of(samples)
    print_results(samples, summary)
    print_breakdown(samples)
    print_own_work(own, summary.floor_ms, summary.overhead_p50_ms)
    print(
        f"Redis connections opened during (a), {len(hits)} jobs + {len(pings)} pings + {len(healthz)} /healthz: "
        f"{connections} (a steady stream reuses every connection: 0 expected)"
    )
    print(
        f"Load average (1/5/15 min) at the end: {load_average()} on {hw['cpus_usable']} CPUs. Other processes on "
        "these CPUs inflate the model times and the overhead; compare runs on an otherwise idle machine."
    )
    if not (summary.a_pass and summary.b_pass and summary.floor_pass):
        print("Some targets were missed (FAIL above); the numbers are a measurement, the exit status stays 0.")
    return {
        "settings": {
            "model": options.model,
            "image_size": options.image_size,
            "repeats": options.repeats,
            "random_weights": True,
            "image": {"width": IMAGE_W, "height": IMAGE_H, "bytes": len(warm_image)},
        },
        "hardware": hw,
        "load_at_end": load_average(),
        "warmup": first.raw(),
        "a": {
            "jobs": [t.raw() for t in hits],
            "ping_ms": pings,
            "healthz_ms": healthz,
            "redis_connections": connections,
        },
        "b": {"first": [t.raw() for t in firsts], "second": [t.raw() for t in seconds]},
        "own_work_ms": own,
        "summary": asdict(summary),
    }


def print_header(options: SegmentOptions, hw: dict[str, Any], upload_bytes: int) -> None:
    print("# samq benchmark")
    print()
    print(hardware_line(hw))
    print(
        f"- settings: model {options.model}, image size {options.image_size}, repeats {options.repeats}, "
        f"worker device auto → {'cuda' if hw['cuda_device'] else 'cpu'}, one worker (prefork, concurrency 1), "
        f"queue interactive, local storage, Redis without persistence"
    )
    print(
        f"- input: synthetic {IMAGE_W}×{IMAGE_H} JPEG ({upload_bytes / 1024:.0f} KiB) uploaded once via POST /v1/uploads; "
        f"one point prompt per job; jobs sent with Prefer: wait={WAIT_SECONDS}"
    )
    print(
        "- weights: RANDOM (SAMQ_RANDOM_WEIGHTS=1): no checkpoint can be downloaded on this machine. The architecture "
        "and its compute are real; the masks are meaningless."
    )
    print(f"- python {hw['python']}; load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def warm_up(client: Client, dispatcher: Dispatcher, model: str, upload_id: str) -> Timed:
    """Load the model and cache this image's embedding in the worker; warm the client's Celery connections."""
    t0 = time.perf_counter()
    first = run_segment(client, model, upload_id, expect="miss")
    print(
        f"warm-up: model load + encode + decode {ms((time.perf_counter() - t0) * 1000)} "
        f"(worker {ms(first.total_ms)}, model {ms(first.model_ms)})",
        flush=True,
    )
    for _ in range(3):
        run_segment(client, model, upload_id, expect="memory")
        time_ping(dispatcher)
        time_healthz(client)
    return first


def interleaved(
    client: Client, dispatcher: Dispatcher, options: SegmentOptions, upload_id: str
) -> tuple[list[Timed], list[float], list[float]]:
    """(a): job then ping on even rounds, ping then job on odd ones; an HTTP round trip to /healthz rides along
    (HTTP's own floor: with the bare round trip, the floor of a job's overhead)."""
    hits: list[Timed] = []
    pings: list[float] = []
    healthz: list[float] = []
    for i in range(options.repeats):
        if i % 2 == 0:
            hits.append(run_segment(client, options.model, upload_id, expect="memory"))
            pings.append(time_ping(dispatcher))
        else:
            pings.append(time_ping(dispatcher))
            hits.append(run_segment(client, options.model, upload_id, expect="memory"))
        healthz.append(time_healthz(client))
    print(f"(a): {len(hits)} cache-hit jobs and {len(pings)} bare pings, interleaved", flush=True)
    return hits, pings, healthz


def fresh_pairs(client: Client, model: str) -> tuple[list[Timed], list[Timed]]:
    """(b): K fresh images; the first job encodes (miss), the second on the same image hits the in-process cache."""
    firsts: list[Timed] = []
    seconds: list[Timed] = []
    for seed in range(1, FRESH_IMAGES + 1):
        fresh = upload(client, synthetic_jpeg(seed))
        firsts.append(run_segment(client, model, fresh, expect="miss"))
        seconds.append(run_segment(client, model, fresh, expect="memory"))
    print(f"(b): {FRESH_IMAGES} fresh images, two jobs each", flush=True)
    return firsts, seconds


def print_results(samples: Samples, summary: Summary) -> None:
    over_p50, ratio = summary.overhead_p50_ms, summary.overhead_over_ping
    overhead = [t.overhead_ms for t in samples.hits]
    print_table_head("Results")
    print(
        f"| (a) e2e segment, cache hit, minus model time, p50 | {ms(over_p50)} (p90 {ms(pct(overhead, 90))}) "
        f"| ≤ {OVERHEAD_TARGET_MS:.0f} ms | {verdict(summary.a_pass)} |"
    )
    print(f"| (a) bare Celery round trip p50 | {ms(summary.ping_p50_ms)} (p90 {ms(summary.ping_p90_ms)}) | | |")
    print(f"| (a) overhead / bare (p50) | {ratio:.2f}× | | |")
    print(f"| (a) HTTP no-op GET /healthz p50 | {ms(summary.healthz_p50_ms)} | | |")
    print(f"| (a) floor = HTTP no-op + bare Celery round trip (p50s) | {ms(summary.floor_ms)} | | |")
    print(
        f"| (a) overhead / floor (p50) | {summary.overhead_over_floor:.2f}× | ≤ {FLOOR_RATIO_TARGET:.0f}× "
        f"| {verdict(summary.floor_pass)} |"
    )
    print(
        f"| (b) first job worker time (encode) | {ms(summary.first_total_ms_median)} (median of {FRESH_IMAGES}; "
        f"model {ms(statistics.median(t.model_ms for t in samples.firsts))}) | | |"
    )
    print(
        f"| (b) second job worker time (cache hit) | {ms(summary.second_total_ms_median)} (median of {FRESH_IMAGES}; "
        f"model {ms(statistics.median(t.model_ms for t in samples.seconds))}) | | |"
    )
    print(
        f"| (b) second / first | {summary.second_over_first:.3f} | ≤ {SECOND_OVER_FIRST_TARGET:.2f} "
        f"| {verdict(summary.b_pass)} |"
    )
    print()


def print_breakdown(samples: Samples) -> None:
    """Where the (a) time goes: the job's own timestamps (one host, one clock) split the client's e2e time."""
    hits = samples.hits

    def row(label: str, values: list[float], note: str = "") -> None:
        print(f"| {label} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | {note} |")

    print("## (a) breakdown, cache-hit jobs (ms)")
    print()
    print("| stage | p50 | p90 | what |")
    print("|---|---|---|---|")
    row("client e2e", [t.e2e_ms for t in hits], "POST /v1/jobs (Prefer: wait) → 200 with the finished job")
    row("model (decoder)", [t.model_ms for t in hits], "summary.timings.model_ms")
    row("overhead = e2e − model", [t.overhead_ms for t in hits], "criterion (a)")
    row("· client → job record", [t.stages["api_ingress_ms"] for t in hits], "HTTP, Flask, validation, upload lookup")
    row(
        "· record → worker start",
        [t.stages["dispatch_ms"] for t in hits],
        "JobStore.create, send_task, broker, prefork, JobStore.start",
    )
    row("· worker start → finish", [t.stages["worker_ms"] for t in hits], "started_at → finished_at")
    row("  · pipeline total", [t.total_ms for t in hits], "summary.timings.total_ms")
    row(
        "  · pipeline minus model",
        [t.total_ms - t.model_ms for t in hits],
        "fetch upload, sha256, cache lookup, prompt parsing, result encode + writes",
    )
    row(
        "  · outside the pipeline",
        [t.stages["worker_ms"] - t.total_ms for t in hits],
        "JobStore.start commit, lease registration, the peek at the queue, JobStore.succeed up to its stamp",
    )
    row(
        "· finish → client",
        [t.stages["egress_ms"] for t in hits],
        "JobStore.succeed, publish, the waiter's wake (the record is in the message), render, HTTP",
    )
    row("bare Celery round trip", samples.pings, "Dispatcher.ping")
    row("HTTP GET /healthz", samples.healthz, "the HTTP + waitress + Flask floor (with the bare round trip: the floor)")
    print()
