"""The bulk section: images per second of one ``batch`` job over N uploads against N separate ``segment`` jobs.

Fairness: both measures run on the SAME worker process (``samq worker --queues bulk,interactive,io``, concurrency 1:
batch shards arrive on ``bulk``, segment jobs on ``interactive``), same model, image size, prompt and output
options. Embeddings are cached per image content (the worker's in-process LRU; the shared tier in object storage,
keyed by the image's sha256), so every measure gets its own N never-seen images (new seeds, same size: same encoder
work); separate jobs are checked to have encoded theirs (embedding ``miss``). Uploads happen before the clock
starts. The order alternates per repeat (batch first, then separate first) so that a drift in the machine's load
does not favour one; the figure is the median over ``--bulk-repeats``. The API's rate limits are lifted on this
stack (:data:`BULK_API_ENV`): the N submissions of B would otherwise meet 429s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.jobs import IMAGE_H, IMAGE_W, BenchError, epoch, upload_fresh
from bench.report import load_average, ms, print_table_head, verdict
from bench.stacks import DEFAULT_IMAGE_SIZE, running_stack, worker
from samq.client import Client
from tasks.names import Queue
from tasks.settings import QueueSettings

BULK_N = 64
BULK_REPEATS = 3
BULK_TARGET = 1.0  # batch images/s over separate jobs' images/s
BULK_BOX = {"x0": 200.0, "y0": 190.0, "x1": 620.0, "y1": 580.0}  # around the synthetic scene's ellipse
BULK_SEED = 100_000  # the bulk section's images: seeds from here on, every image a new seed (new content)
BULK_POLL_SECONDS = 0.2  # the client's polling; the walls end at the server's finished_at, not at a poll
BULK_API_ENV = {  # the bulk stack's API: no 429 on N uploads + N submissions + polling (throughput, not limits)
    "SAMQ_API_RATE_PER_SECOND": "1000000",
    "SAMQ_API_RATE_BURST": "1000000",
    "SAMQ_API_MAX_QUEUED_JOBS": "1000000",
}
MODES = ("batch", "separate")


@dataclass(frozen=True)
class BulkOptions:
    model: str
    image_size: int
    n: int
    repeats: int


@dataclass(frozen=True)
class Setup:
    """Where the section runs: a GPU runs the full size on cuda, a CPU ``--image-size``; the batch settings."""

    gpu: bool
    size: int
    device: str
    shard_size: int
    encode_size: int

    @classmethod
    def of(cls, options: BulkOptions, hw: dict[str, Any]) -> Setup:
        gpu = hw["cuda_device"] is not None
        limits = QueueSettings()  # SAMQ_BATCH_* from this environment, which the worker inherits
        return cls(
            gpu=gpu,
            size=DEFAULT_IMAGE_SIZE if gpu else options.image_size,
            device="cuda" if gpu else "cpu",
            shard_size=limits.batch_shard_size,
            encode_size=limits.batch_encode_size or (8 if gpu else 1),  # the worker's default when unset
        )


@dataclass
class BulkRun:
    """One timed measure over ``images`` fresh images: ``seconds`` from just before the first submission to the
    server's ``finished_at`` of the last job to finish (one host, one clock); ``client_seconds`` to the poll that saw
    it; ``submit_seconds`` sending the submission(s)."""

    mode: str  # "batch" (one batch job) or "separate" (one segment job per image)
    repeat: int
    images: int
    seconds: float
    client_seconds: float
    submit_seconds: float
    job_ids: list[str]

    @property
    def per_second(self) -> float:
        return self.images / self.seconds

    def raw(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.per_second}


Measure = Callable[[Client, str, list[str], int], BulkRun]


def bulk_template(model: str) -> dict[str, Any]:
    """The segment work of every image in the bulk section: one box prompt, the best mask only."""
    return {"type": "segment", "model": model, "prompts": [{"box": BULK_BOX}], "multimask_output": False}


def bulk_batch_job(model: str, uploads: list[str]) -> dict[str, Any]:
    return {"type": "batch", "template": bulk_template(model), "inputs": {"items": [{"upload": u} for u in uploads]}}


def _bulk_timeout(images: int) -> float:
    return 600.0 + 60.0 * images  # generous: a few seconds per 1024 px image on two CPUs


def run_bulk_batch(client: Client, model: str, uploads: list[str], repeat: int) -> BulkRun:
    """Measure A: one batch job over the uploads, submit → terminal."""
    n = len(uploads)
    sent = time.time()
    started = time.perf_counter()
    job = client.submit(bulk_batch_job(model, uploads))
    submitted = time.perf_counter()
    done = client.wait(job["id"], timeout=_bulk_timeout(n), interval=BULK_POLL_SECONDS)
    client_seconds = time.perf_counter() - started
    if done["status"] != "succeeded":
        raise BenchError(f"batch {job['id']} ended {done['status']} (error: {done.get('error')})")
    summary = done["result"]["summary"]
    counts = (summary["total"], summary["succeeded"], summary["failed"])
    if counts != (n, n, 0):
        raise BenchError(f"batch {job['id']}: total/succeeded/failed {counts}, expected ({n}, {n}, 0)")
    seconds = epoch(done["finished_at"]) - sent
    return BulkRun("batch", repeat, n, seconds, client_seconds, submitted - started, [job["id"]])


def run_bulk_separate(client: Client, model: str, uploads: list[str], repeat: int) -> BulkRun:
    """Measure B: one segment job per upload, all submitted at once (the queue kept full), then all awaited; first
    submit → last terminal. Every job must have encoded its image (embedding ``miss``): a cache hit would flatter B."""
    n = len(uploads)
    deadline = time.monotonic() + _bulk_timeout(n)
    sent = time.time()
    started = time.perf_counter()
    ids = [client.submit({**bulk_template(model), "image": {"upload": u}})["id"] for u in uploads]
    submitted = time.perf_counter()
    jobs = [
        client.wait(job_id, timeout=max(1.0, deadline - time.monotonic()), interval=BULK_POLL_SECONDS) for job_id in ids
    ]
    client_seconds = time.perf_counter() - started
    failed = [(j["id"], j["status"], j.get("error")) for j in jobs if j["status"] != "succeeded"]
    if failed:
        raise BenchError(f"{len(failed)} of {n} separate jobs did not succeed, e.g. {failed[0]}")
    hits = [
        (j["id"], j["result"]["summary"]["embedding"]) for j in jobs if j["result"]["summary"]["embedding"] != "miss"
    ]
    if hits:
        raise BenchError(f"{len(hits)} separate jobs found a cached embedding (e.g. {hits[0]}): the images repeat")
    seconds = max(epoch(j["finished_at"]) for j in jobs) - sent
    return BulkRun("separate", repeat, n, seconds, client_seconds, submitted - started, ids)


MEASURES: dict[str, Measure] = {"batch": run_bulk_batch, "separate": run_bulk_separate}


def measure_bulk(options: BulkOptions, workdir: Path, hw: dict[str, Any]) -> dict[str, Any]:
    """A batch of N images against N separate segment jobs, images per second, on a stack of its own under
    ``workdir``; prints the table, returns the raw numbers."""
    setup = Setup.of(options, hw)
    print_header(options, setup, hw)
    worker_env = {"SAMQ_IMAGE_SIZE": str(setup.size), "SAMQ_WORKER_DEVICE": setup.device}
    queues = [Queue.BULK, Queue.INTERACTIVE, Queue.IO]
    with running_stack(workdir, options.image_size, BULK_API_ENV) as stack, worker(stack, queues, worker_env):
        client = Client(stack.api_url, timeout=60)
        seed = warm_up(client, options, setup, BULK_SEED)
        runs = timed_runs(client, options, seed)
    return report(options, setup, hw, runs)


def print_header(options: BulkOptions, setup: Setup, hw: dict[str, Any]) -> None:
    repeats = options.repeats
    print("## Bulk")
    print()
    print(
        f"- settings: {options.model} with RANDOM weights (SAMQ_RANDOM_WEIGHTS=1), input {setup.size} px, device "
        f"{setup.device} ({hw['cuda_device'] or 'no CUDA device'}); one `samq worker --queues bulk,interactive,io` "
        f"(prefork, concurrency 1) runs both measures; shards of {setup.shard_size} images "
        f"(SAMQ_BATCH_SHARD_SIZE), encoded {setup.encode_size} at a time (SAMQ_BATCH_ENCODE_SIZE)"
    )
    print(
        f"- work: N={options.n} synthetic {IMAGE_W}×{IMAGE_H} JPEGs per measure, one box prompt {BULK_BOX}, "
        "multimask_output false; A = one batch job (submit → terminal), B = N segment jobs submitted at once, then "
        f"awaited (first submit → last terminal); every measure on N never-seen images (uploaded beforehand); "
        f"{repeats} repeat{'s' if repeats != 1 else ''}, alternating which goes first; medians"
    )
    print(f"- load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def warm_up(client: Client, options: BulkOptions, setup: Setup, seed: int) -> int:
    """Untimed: the model loads with the first job; then each path once (a batched encode of SAMQ_BATCH_ENCODE_SIZE
    images; on a GPU also the kernels' autotuning for both batch sizes). Returns the next unused seed."""
    warm_n = max(2, min(options.n, setup.encode_size))
    t0 = time.perf_counter()
    warm = upload_fresh(client, range(seed, seed + 1 + 2 * warm_n))
    run_bulk_separate(client, options.model, warm[:1], repeat=-1)
    run_bulk_batch(client, options.model, warm[1 : 1 + warm_n], repeat=-1)
    run_bulk_separate(client, options.model, warm[1 + warm_n :], repeat=-1)
    print(
        f"bulk warm-up: model load, 1 + {warm_n} separate jobs, a batch of {warm_n}: "
        f"{ms((time.perf_counter() - t0) * 1000)}",
        flush=True,
    )
    return seed + len(warm)


def timed_runs(client: Client, options: BulkOptions, seed: int) -> dict[str, list[BulkRun]]:
    """``--bulk-repeats`` rounds of both measures on fresh images each, alternating which goes first."""
    n, repeats = options.n, options.repeats
    runs: dict[str, list[BulkRun]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        images = {mode: upload_fresh(client, range(seed + i * n, seed + (i + 1) * n)) for i, mode in enumerate(MODES)}
        seed += 2 * n
        order = MODES if repeat % 2 == 0 else MODES[::-1]
        for mode in order:
            run = MEASURES[mode](client, options.model, images[mode], repeat)
            runs[mode].append(run)
            print(
                f"bulk repeat {repeat + 1}/{repeats}, {mode}: {n} images in {run.seconds:.2f} s, "
                f"{run.per_second:.2f} img/s (load {load_average()})",
                flush=True,
            )
    return runs


def report(options: BulkOptions, setup: Setup, hw: dict[str, Any], runs: dict[str, list[BulkRun]]) -> dict[str, Any]:
    """The table, the one-line row, the notes; the raw numbers."""
    n, repeats = options.n, options.repeats
    label = "GPU" if setup.gpu else "CPU"
    batch = statistics.median(r.per_second for r in runs["batch"])
    separate = statistics.median(r.per_second for r in runs["separate"])
    ratio = batch / separate
    ok = ratio >= BULK_TARGET
    row = (
        f"bulk{' GPU' if setup.gpu else ''}  N={n}  batch {batch:.2f} img/s  separate {separate:.2f} img/s  "
        f"ratio {ratio:.2f}  target >= {BULK_TARGET:.1f}: {verdict(ok)}"
    )

    def listed(mode: str) -> str:
        return ", ".join(f"{r.per_second:.2f}" for r in runs[mode])

    print()
    print_table_head("Bulk results")
    print(
        f"| bulk, {label}, {setup.size} px: one batch job of {n} images, images/s | {batch:.2f} (median of "
        f"{repeats}: {listed('batch')}) | | |"
    )
    print(
        f"| bulk, {label}, {setup.size} px: {n} separate segment jobs at once, images/s | {separate:.2f} (median of "
        f"{repeats}: {listed('separate')}) | | |"
    )
    print(f"| bulk, {label}: batch / separate | {ratio:.2f}× | ≥ {BULK_TARGET:.1f}× | {verdict(ok)} |")
    print()
    print(row)
    print()
    submits = statistics.median(r.submit_seconds for r in runs["separate"])
    print(
        f"Walls end at the server's finished_at of the batch (A) or of the last separate job (B); sending B's {n} "
        f"submissions took {ms(submits * 1000)} (median; inside B's wall, as the worker starts on the first). "
        f"Load average (1/5/15 min) at the end: {load_average()}."
    )
    print(flush=True)
    return {
        "settings": {
            "model": options.model,
            "image_size": setup.size,
            "device": setup.device,
            "cuda_device": hw["cuda_device"],
            "random_weights": True,
            "n": n,
            "repeats": repeats,
            "image": {"width": IMAGE_W, "height": IMAGE_H},
            "box": BULK_BOX,
            "shard_size": setup.shard_size,
            "encode_size": setup.encode_size,
        },
        "runs": {mode: [r.raw() for r in mode_runs] for mode, mode_runs in runs.items()},
        "batch_images_per_second": batch,
        "separate_images_per_second": separate,
        "ratio": ratio,
        "target": BULK_TARGET,
        "pass": ok,
        "row": row,
    }
