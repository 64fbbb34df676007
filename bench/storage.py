"""The storage section: worker throughput when object storage is far, next to the raw model loop.

A stack of its own: moto's S3 server (``tests/support/moto_server.py``) reached through two latency-adding TCP
proxies (``tests/support/tcp_proxy.py``), one the API's endpoint and one the worker's, so that each side's requests
and connections are counted apart; one ``samq worker`` (prefork, concurrency 1) with SAM2 at ``--storage-image-size``
(default 256). At each round trip of ``--storage-rtts`` (default 0, 50, 100 ms; both proxies alike):

- segment: ``--storage-jobs`` (default 24) segment jobs (one point prompt) on never-seen images, uploaded first
  (outside the clock, at 0 ms), all submitted, then awaited; jobs/s from just before the first submission to the
  last job's ``finished_at`` (one host, one clock), on a worker ``--queues interactive``;
- batch: one batch job (segment template, same prompt) over as many never-seen uploads, submit → ``finished_at``,
  items/s, on a worker ``--queues bulk,io`` (started after the segment rows);

each next to the same row at 0 ms and to the raw model loop: the runner called in this process on the same kind of
images (``encode`` + one ``predict``, JPEG decoding excluded), images/s. The proxies' counts while the jobs run
(after the uploads) give the storage requests and new TCP connections per job, and which requests they are.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3

from bench.bulk import BULK_API_ENV
from bench.jobs import IMAGE_H, IMAGE_W, BenchError, epoch, synthetic_jpeg, upload
from bench.report import load_average, ms, verdict
from bench.stacks import running_stack, worker
from samq.client import Client
from tasks.names import Queue
from tests.support.moto_server import moto_s3_server
from tests.support.stack import Stack, s3_storage_env
from tests.support.tcp_proxy import TcpProxy, Traffic

BUCKET = "samq-bench"
STORAGE_JOBS = 24
STORAGE_RTTS_MS = (0.0, 50.0, 100.0)
STORAGE_IMAGE_SIZE = 256
STORAGE_SEED = 200_000  # this section's images: seeds from here on, one per image (new content, no cached embedding)
WARM_SEED = 300_000  # the warm-up runs' images
POINT = {"x": 410.0, "y": 384.0}  # inside the synthetic scene's ellipse
TARGETS = {50.0: 0.9, 100.0: 0.8}  # issue 17: throughput at this round trip over the one at 0 ms
POLL_SECONDS = 0.2  # the client's polling; the walls end at the server's finished_at, not at a poll
SIDES = ("api", "worker")


@dataclass(frozen=True)
class StorageOptions:
    model: str
    image_size: int
    jobs: int
    rtts_ms: tuple[float, ...]
    handshake_rtts: int = 1


@dataclass
class Row:
    """One timed measure at one round trip: ``kind`` ``segment`` (N jobs) or ``batch`` (one job of N items)."""

    kind: str
    rtt_ms: float
    items: int
    seconds: float
    client_seconds: float
    traffic: dict[str, Traffic]
    timings: list[dict[str, float]]
    """Each segment job's ``model_ms`` and ``total_ms`` (its pipeline, writes included) from ``summary.timings``, and
    ``worker_ms`` (``started_at`` → ``finished_at``); none for a batch."""

    @property
    def per_second(self) -> float:
        return self.items / self.seconds

    def per_item(self, what: str, side: str | None = None) -> float:
        """``requests`` or ``connections`` per job (per item of a batch), one side's or both."""
        sides = SIDES if side is None else (side,)
        counts = [self.traffic[s] for s in sides]
        total = sum(len(t.requests) if what == "requests" else t.connections for t in counts)
        return total / self.items

    def raw(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rtt_ms": self.rtt_ms,
            "items": self.items,
            "seconds": self.seconds,
            "client_seconds": self.client_seconds,
            "per_second": self.per_second,
            "timings": self.timings,
            "traffic": {
                side: {
                    "connections": t.connections,
                    "requests": len(t.requests),
                    "unparsed_streams": t.unparsed,
                    "by_pattern": dict(patterns(t)),
                }
                for side, t in self.traffic.items()
            },
        }


def patterns(traffic: Traffic) -> Counter[str]:
    """Requests by method and key pattern: ids (hex digests, uuids, long tokens) become ``{id}``, zero-padded item
    and shard indexes ``{n}``, query values go."""

    def segment(part: str) -> str:
        return re.sub(r"^[0-9]{4,}(?=\.|$)", "{n}", re.sub(r"^[0-9A-Za-z_-]{16,}(?=\.|$)", "{id}", part))

    def pattern(method: str, target: str) -> str:
        parts = urlsplit(target)
        path = "/".join(segment(part) for part in parts.path.split("/"))
        query = "&".join(sorted(item.split("=", 1)[0] for item in parts.query.split("&") if item))
        return f"{method} {path}{'?' + query if query else ''}"

    return Counter(pattern(method, target) for method, target in traffic.requests)


@dataclass
class Proxies:
    """The API's and the worker's way to storage; both add the same round trip."""

    api: TcpProxy
    worker: TcpProxy

    def set_rtt(self, rtt_ms: float) -> None:
        self.api.rtt = self.worker.rtt = rtt_ms / 1000

    def reset(self) -> None:
        self.api.reset()
        self.worker.reset()

    def traffic(self) -> dict[str, Traffic]:
        return {"api": self.api.traffic(), "worker": self.worker.traffic()}


@contextmanager
def far_storage(handshake_rtts: int) -> Iterator[tuple[str, Proxies]]:
    """moto's S3 server with the bench's bucket, and the two proxies in front of it (a new connection costs
    ``handshake_rtts`` round trips more); all stopped on exit."""
    with moto_s3_server() as endpoint:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        s3.create_bucket(Bucket=BUCKET)
        port = int(urlsplit(endpoint).port or 0)
        proxies = Proxies(TcpProxy(port, handshake_rtts=handshake_rtts), TcpProxy(port, handshake_rtts=handshake_rtts))
        try:
            yield endpoint, proxies
        finally:
            proxies.api.down()
            proxies.worker.down()


def segment_job(model: str, upload_id: str) -> dict[str, Any]:
    return {"type": "segment", "model": model, "image": {"upload": upload_id}, "prompts": [{"points": [POINT]}]}


def batch_job(model: str, uploads: list[str]) -> dict[str, Any]:
    template = {"type": "segment", "model": model, "prompts": [{"points": [POINT]}]}
    return {"type": "batch", "template": template, "inputs": {"items": [{"upload": u} for u in uploads]}}


def _timeout(items: int) -> float:
    return 300.0 + 30.0 * items


def run_segments(client: Client, model: str, uploads: list[str]) -> tuple[float, float, list[dict[str, float]]]:
    """All submitted, then all awaited; every job must have encoded its image. (server wall, client wall, each
    job's timings)."""
    deadline = time.monotonic() + _timeout(len(uploads))
    sent = time.time()
    started = time.perf_counter()
    ids = [client.submit(segment_job(model, u))["id"] for u in uploads]
    jobs = [client.wait(i, max(1.0, deadline - time.monotonic()), interval=POLL_SECONDS) for i in ids]
    client_seconds = time.perf_counter() - started
    for job in jobs:
        if job["status"] != "succeeded":
            raise BenchError(f"segment job {job['id']} ended {job['status']} (error: {job.get('error')})")
        if (source := job["result"]["summary"]["embedding"]) != "miss":
            raise BenchError(f"segment job {job['id']} found a cached embedding ({source}): the images repeat")
    timings = [
        {
            "model_ms": float(j["result"]["summary"]["timings"]["model_ms"]),
            "total_ms": float(j["result"]["summary"]["timings"]["total_ms"]),
            "worker_ms": (epoch(j["finished_at"]) - epoch(j["started_at"])) * 1000,
        }
        for j in jobs
    ]
    return max(epoch(j["finished_at"]) for j in jobs) - sent, client_seconds, timings


def run_batch(client: Client, model: str, uploads: list[str]) -> tuple[float, float, list[dict[str, float]]]:
    """One batch job over the uploads, submit → terminal. (server wall, client wall, no per-item timings)."""
    n = len(uploads)
    sent = time.time()
    started = time.perf_counter()
    job = client.submit(batch_job(model, uploads))
    done = client.wait(job["id"], _timeout(n), interval=POLL_SECONDS)
    client_seconds = time.perf_counter() - started
    if done["status"] != "succeeded":
        raise BenchError(f"batch {job['id']} ended {done['status']} (error: {done.get('error')})")
    summary = done["result"]["summary"]
    if (counts := (summary["total"], summary["succeeded"], summary["failed"])) != (n, n, 0):
        raise BenchError(f"batch {job['id']}: total/succeeded/failed {counts}, expected ({n}, {n}, 0)")
    return epoch(done["finished_at"]) - sent, client_seconds, []


class Images:
    """Never-seen synthetic photos, one seed each from ``seed`` on, uploaded on demand (at 0 ms: uploads are outside
    every clock); :meth:`peek` shows the next ones without using them up."""

    def __init__(self, client: Client, proxies: Proxies, seed: int) -> None:
        self.client, self.proxies = client, proxies
        self.seed = seed
        self._made: list[bytes] = []

    def peek(self, n: int) -> list[bytes]:
        while len(self._made) < n:
            self._made.append(synthetic_jpeg(self.seed))
            self.seed += 1
        return self._made[:n]

    def upload(self, n: int) -> list[str]:
        jpegs, self._made = self.peek(n), self._made[n:]
        self.proxies.set_rtt(0)
        return [upload(self.client, jpeg) for jpeg in jpegs]


def timed_row(kind: str, rtt_ms: float, images: Images, client: Client, model: str, n: int) -> Row:
    uploads = images.upload(n)
    images.proxies.set_rtt(rtt_ms)
    images.proxies.reset()
    run = run_segments if kind == "segment" else run_batch
    seconds, client_seconds, timings = run(client, model, uploads)
    row = Row(kind, rtt_ms, n, seconds, client_seconds, images.proxies.traffic(), timings)

    def p50(key: str) -> str:
        return ms(statistics.median(t[key] for t in timings))

    timing = (
        f" (per job, p50: worker {p50('worker_ms')}, pipeline {p50('total_ms')}, model {p50('model_ms')})"
        if timings
        else ""
    )
    print(
        f"storage {kind}, round trip {rtt_ms:g} ms: {n} {'jobs' if kind == 'segment' else 'items'} in "
        f"{seconds:.2f} s, {row.per_second:.2f}/s{timing}; {row.per_item('requests'):.2f} storage requests and "
        f"{row.per_item('connections'):.2f} new connections per {'job' if kind == 'segment' else 'item'} "
        f"(load {load_average()})",
        flush=True,
    )
    return row


def raw_model_loop(options: StorageOptions, jpegs: list[bytes]) -> dict[str, Any]:
    """The runner in this process, on decoded images: one warm-up image, then ``encode`` + one point ``predict``
    per image, as a segment job does (multimask, best mask, no logits). Images per second of model time."""
    import numpy as np  # heavy: imported when measuring

    from worker.images import decode_image
    from worker.runners.image import VisualPrompt
    from worker.runners.sam2_image import Sam2ImageRunner
    from worker.settings import WorkerSettings

    settings = WorkerSettings(device="auto", random_weights=True, image_size=options.image_size)
    runner = Sam2ImageRunner.load(options.model, settings)
    decoded = [decode_image(jpeg, IMAGE_W * IMAGE_H) for jpeg in jpegs]
    prompt = VisualPrompt(
        point_coords=np.array([[POINT["x"], POINT["y"]]], dtype=np.float32), point_labels=np.array([1], dtype=np.int32)
    )
    runner.predict(runner.encode(decoded[0]), [prompt])  # warm-up
    times = []
    for image in decoded:
        started = time.perf_counter()
        runner.predict(runner.encode(image), [prompt], multimask_output=True, return_all_masks=False)
        times.append(time.perf_counter() - started)
    return {"device": runner.device, "images": len(times), "seconds": times, "per_second": len(times) / sum(times)}


def measure_storage(options: StorageOptions, workdir: Path, hw: dict[str, Any]) -> dict[str, Any]:
    """The section on a stack of its own under ``workdir``; prints the tables, returns the raw numbers."""
    print_header(options, hw)
    size, n = options.image_size, options.jobs
    with far_storage(options.handshake_rtts) as (_, proxies):
        env = {**s3_storage_env(proxies.api.url, BUCKET), **BULK_API_ENV, "SAMQ_IMAGE_SIZE": str(size)}
        with running_stack(workdir, size, env) as stack:
            client = Client(stack.api_url, timeout=60)
            images, warm = Images(client, proxies, STORAGE_SEED), Images(client, proxies, WARM_SEED)
            raw = raw_model_loop(options, images.peek(n))  # the first row's images
            print(f"raw model loop: {raw['per_second']:.2f} images/s on {raw['device']}", flush=True)
            rows = measured(stack, client, images, warm, options, [Queue.INTERACTIVE], "segment")
            rows += measured(stack, client, images, warm, options, [Queue.BULK, Queue.IO], "batch")
    report(options, raw, rows)
    return {
        "settings": {**asdict(options), "image": {"width": IMAGE_W, "height": IMAGE_H}, "point": POINT},
        "hardware": hw,
        "raw_model_loop": raw,
        "rows": [r.raw() for r in rows],
        "load_at_end": load_average(),
    }


def measured(
    stack: Stack,
    client: Client,
    images: Images,
    warm: Images,
    options: StorageOptions,
    queues: list[Queue],
    kind: str,
) -> list[Row]:
    """A worker on ``queues`` (with the worker's proxy), warmed with an untimed run on two ``warm`` images, then a
    row per round trip on ``images``."""
    worker_env = {"SAMQ_STORAGE_S3_ENDPOINT_URL": images.proxies.worker.url}
    with worker(stack, queues, worker_env):
        t0 = time.perf_counter()
        (run_segments if kind == "segment" else run_batch)(client, options.model, warm.upload(2))
        print(f"storage {kind} warm-up (model load, 2 images): {ms((time.perf_counter() - t0) * 1000)}", flush=True)
        return [timed_row(kind, rtt, images, client, options.model, options.jobs) for rtt in options.rtts_ms]


def print_header(options: StorageOptions, hw: dict[str, Any]) -> None:
    rtts = ", ".join(f"{r:g}" for r in options.rtts_ms)
    print("## Storage latency")
    print()
    print(
        f"- settings: {options.model} with RANDOM weights (SAMQ_RANDOM_WEIGHTS=1), input {options.image_size} px, "
        f"device auto ({hw['cuda_device'] or 'no CUDA device'}); one worker (prefork, concurrency 1): "
        "`--queues interactive` for the segment rows, then `--queues bulk,io` for the batch rows"
    )
    print(
        f"- storage: moto's S3 server behind two TCP proxies (the API's, the worker's) adding a round trip of "
        f"{rtts} ms (half each way, per chunk; a new connection's first bytes {options.handshake_rtts} round "
        f"trip{'s' if options.handshake_rtts != 1 else ''} more, its handshake); {options.jobs} never-seen synthetic {IMAGE_W}×{IMAGE_H} JPEGs per "
        "row, uploaded beforehand at 0 ms; one point prompt; segment: all jobs submitted, then awaited; batch: one "
        "job over as many items; walls from the first submission to the last finished_at"
    )
    print(f"- load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def report(options: StorageOptions, raw: dict[str, Any], rows: list[Row]) -> None:
    """The throughput table (with the issue's targets), then which storage requests a job makes."""
    loop = raw["per_second"]
    zero = {r.kind: r.per_second for r in rows if r.rtt_ms == 0}
    print()
    print("## Storage latency results")
    print()
    print(
        f"| work | storage round trip | per second | vs 0 ms | vs raw model loop ({loop:.2f} img/s) "
        "| storage requests / job (API + worker) | new connections / job (API + worker) | target | pass/fail |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        unit = "jobs/s" if row.kind == "segment" else "items/s"
        vs_zero = row.per_second / zero[row.kind] if row.kind in zero else None
        target = TARGETS.get(row.rtt_ms)
        checked = f"≥ {target:.1f}× the 0 ms row" if target is not None else ""
        passed = verdict(vs_zero >= target) if target is not None and vs_zero is not None else ""
        requests = " + ".join(f"{row.per_item('requests', side):.2f}" for side in SIDES)
        connections = " + ".join(f"{row.per_item('connections', side):.2f}" for side in SIDES)
        print(
            f"| {row.kind}, {row.items} {'jobs' if row.kind == 'segment' else 'items'} | {row.rtt_ms:g} ms "
            f"| {row.per_second:.2f} {unit} | {'' if vs_zero is None else f'{vs_zero:.2f}'} "
            f"| {row.per_second / loop:.2f} | {row.per_item('requests'):.2f} ({requests}) "
            f"| {row.per_item('connections'):.2f} ({connections}) | {checked} | {passed} |"
        )
    print()
    first: dict[str, Row] = {}
    for row in rows:
        first.setdefault(row.kind, row)
    print(f"## Storage requests per job, by side, method and key ({options.model}; at the first round trip)")
    print()
    print("| work | side | request | per job (batch: per item) |")
    print("|---|---|---|---|")
    for kind, row in first.items():
        for side in SIDES:
            for pattern, count in sorted(patterns(row.traffic[side]).items()):
                print(f"| {kind} | {side} | `{pattern}` | {count / row.items:.2f} |")
    unparsed = sum(t.unparsed for r in rows for t in r.traffic.values())
    print()
    print(
        "Requests are counted on the proxies' client → server streams at request boundaries; new connections are "
        f"those the proxies accepted while the row ran (after its uploads). Streams not parsed as HTTP: {unparsed}. "
        f"Load average (1/5/15 min) at the end: {load_average()}."
    )
    print(flush=True)
