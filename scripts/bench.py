#!/usr/bin/env python
"""samq benchmark: our overhead on a cache-hit segment job, the embedding cache, SAM3 concepts, SAM2 video tracking.

Starts a private stack in a temporary directory (redis-server, ``samq api``, one ``samq worker --queues
interactive``), on the production code path, then measures the issue's two acceptance criteria:

(a) a segment job on an image whose embedding is cached in the worker (model warm), timed end to end from the client
    (``POST /v1/jobs`` with ``Prefer: wait=30`` until the 200 carrying the finished job), minus the model's own time
    (``summary.timings.model_ms``: the prompt decoder on a hit) = "our overhead"; next to a bare Celery no-op round trip
    (``tasks.dispatch.ping``) on the same Redis and the same worker. The two series are interleaved.
    Targets: overhead p50 ≤ 25 ms and ≤ 1.5× the bare round trip's p50.
(b) the worker time (``summary.timings.total_ms``) of a second segment job on the same image, over the first's (which
    runs the image encoder). Target: ≤ 0.10.

Then the SAM3 concept section, on its own ``samq worker --queues sam3`` (started after the segment section, with
``SAMQ_IMAGE_SIZE`` = ``--image-size``; SAM3 rounds it down to a multiple of 14):

- timings: for each phrase count of ``--concept-phrases`` (default 1 and 3), ``--concept-repeats`` fresh images, each
  with a first concept job (the image is encoded: ``embedding`` "miss") and a second, identical one (the in-process
  embedding cache: "memory"). Rows: encode time, detect time per phrase (``detect_ms`` / phrases), first and second
  job worker time (``total_ms``) and end-to-end time; medians.
- memory: peak RSS of the worker's pool process (the child of ``samq worker`` that runs the jobs) during one concept
  job on a synthetic ``--memory-image`` (default 4000×3000) with ``--memory-phrases`` phrases (default 8: more
  candidates than 100), threshold 0, ``max_detections`` 100 and then 5, each in a FRESH worker warmed with one small
  job; the peak is the pool process's VmHWM, reset (``/proc/<pid>/clear_refs``) after the warm-up, and RSS sampled
  every 5 ms. Target: the two peaks within 0.5 GB (1 GB = 10⁹ bytes here).
- GPU: the released SAM3 (bf16 autocast) time per image, against Meta's 30 ms on an H200, measured only when the
  machine has a CUDA device AND the released weights are in ``SAMQ_WORKER_MODELS_DIR``/sam3 (nothing is downloaded);
  otherwise a line says why it was not measured.

Then the SAM2 video section (no stack: each measurement is a fresh ``python scripts/bench.py --video-child`` process
with ``TORCH_COMPILE_DISABLE=1 TQDM_DISABLE=1``), on a synthetic 160×120 mp4 of one moving ellipse (``tests/support/
videos.py``), hiera_tiny with random weights at ``--video-image-size`` (default 256) on the CPU, one object seeded
with a box on frame 0:

- flat memory: the peak RSS (the process's VmHWM, and its RSS sampled every 5 ms) of one process per run, tracking
  through ``--video-short-frames`` (default 60) and ``--video-long-frames`` (default 600) frames with samq's streaming
  tracker (``Sam2VideoRunner`` over the lazy ``worker.video`` decoder). Target: long / short ≤ 1.10. For contrast,
  the same two runs with Meta's ``SAM2VideoPredictor`` (``init_state`` on a JPEG folder of the same frames).
- speed: frames per second over the short clip, samq's tracker (probe + decode + track + binarize) against Meta's
  raw loop (``add_new_points_or_box`` + ``propagate_in_video`` over the frames ``init_state`` already loaded), both
  built with ``torch.manual_seed(0)`` (identical weights and work), in one process, alternating; one warm-up run
  each, then the median of ``--video-repeats`` (default 5). Target: samq ≥ 0.9× Meta.
- GPU: the same speed comparison at 1024 px (random weights) when the machine has a CUDA device; otherwise a line
  says so.

Then the bulk section, on a stack of its own (redis-server, ``samq api`` with its rate limits lifted, one ``samq
worker --queues bulk,interactive,io`` at ``--image-size`` on the CPU, or on cuda at 1024 when the machine has a CUDA
device): images per second of one ``batch`` job over ``--bulk-n`` uploads (default 64; a segment template with one box
prompt, ``multimask_output`` false), submit to terminal, against the same number of separate ``segment`` jobs with the
same prompt, all submitted at once then awaited, first submit to last terminal. Each measure runs on never-seen images
(embeddings are cached per image content), ``--bulk-repeats`` times (default 3), alternating which goes first; the
medians give the row ``bulk  N=64  batch X img/s  separate Y img/s  ratio Z  target >= 1.0: PASS|FAIL`` (``bulk GPU``
on a GPU).

Weights: the real SAM2.1 architecture, and a shrunk SAM3 (a few layers of 32–64 channels), are built with seeded
random weights (``SAMQ_RANDOM_WEIGHTS=1``) because no checkpoint can be downloaded here; speed is the
architecture's, masks are meaningless.

    .venv/bin/python scripts/bench.py                          # hiera_tiny at 1024, 50 repeats; then SAM3 concept
    .venv/bin/python scripts/bench.py --image-size 256 --repeats 20 --json bench.json
    .venv/bin/python scripts/bench.py --only segment           # (a) and (b) only
    .venv/bin/python scripts/bench.py --only concept --concept-repeats 5 --concept-phrases 1,3
    .venv/bin/python scripts/bench.py --only concept --no-memory   # concept timings without the 4000×3000 jobs
    .venv/bin/python scripts/bench.py --only video             # SAM2 video: flat memory and speed (minutes)
    .venv/bin/python scripts/bench.py --only bulk              # a batch of 64 against 64 separate jobs, 3 repeats

Flags: ``--only {segment,concept,video,bulk}`` (default: all four sections), ``--concept-repeats N`` (default 5),
``--concept-phrases N,M`` (default 1,3; at most 8), ``--memory-image WxH`` (default 4000x3000),
``--memory-phrases N`` (default 8), ``--no-memory``; ``--video-image-size`` (default 256), ``--video-short-frames``
(default 60), ``--video-long-frames`` (default 600), ``--video-repeats`` (default 5); ``--bulk-n`` (default 64),
``--bulk-repeats`` (default 3); ``--image-size``, ``--model`` (SAM2 only), ``--repeats`` (segment section), ``--json
PATH`` (the concept, video and bulk numbers under ``"concept"``, ``"video"`` and ``"bulk"``), ``--keep``.

Exit status 0 whenever measurements were taken, whether or not the targets are met (the table says PASS/FAIL).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from api.client import Client  # noqa: E402
from api.embedded import free_port, redis_server, samq_command, wait_for  # noqa: E402
from tasks.dispatch import ping  # noqa: E402
from tasks.names import Queue  # noqa: E402
from tasks.settings import QueueSettings  # noqa: E402
from tasks.specs import MAX_BATCH_ITEMS_INLINE  # noqa: E402
from worker.celery_app import create_celery  # noqa: E402

if TYPE_CHECKING:
    from worker.settings import WorkerSettings

DEFAULT_IMAGE_SIZE = 1024
IMAGE_W, IMAGE_H = 1024, 768
POINT = {"x": 410.0, "y": 384.0}  # inside the synthetic scene's ellipse
FRESH_IMAGES = 3  # K of criterion (b)
WAIT_SECONDS = 30
OVERHEAD_TARGET_MS = 25.0
OVERHEAD_RATIO_TARGET = 1.5
SECOND_OVER_FIRST_TARGET = 0.10
SECTIONS = ("segment", "concept", "video", "bulk")
PHRASES = ("red car", "person", "dog", "traffic light", "bicycle", "tree", "window", "building")
"""Concept prompts, in this order: the timed jobs take the first N, the memory test's the first --memory-phrases."""
CONCEPT_THRESHOLD = 0.5  # the API default, for the timed jobs
MEMORY_W, MEMORY_H = 4000, 3000
MEMORY_MAX_DETECTIONS = (100, 5)
MEMORY_TARGET_BYTES = 0.5e9  # the "within 0.5 GB"
RSS_SAMPLE_SECONDS = 0.005
CONCEPT_JOB_TIMEOUT = 900.0
META_H200_MS = 30.0  # Meta's SAM3 release: 30 ms per image (100+ detected objects) on an H200
GB = 1e9
VIDEO_MODEL = "sam2.1_hiera_tiny"
VIDEO_W, VIDEO_H, VIDEO_FPS = 160, 120, 30
VIDEO_GPU_IMAGE_SIZE = 1024
FLAT_MEMORY_TARGET = 1.10  # long / short peak RSS: "within 10%"
VIDEO_SPEED_TARGET = 0.9  # samq fps / Meta's raw loop fps
CHILD_ENV = {"TORCH_COMPILE_DISABLE": "1", "TQDM_DISABLE": "1"}  # sam2 draws tqdm bars; no compile on the clock
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


# ---- the stack ----------------------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """Something other than a measurement went wrong (the stack, a failed job)."""


class Stack:
    """redis-server + ``samq api`` + ``samq worker`` processes, each child in its own session so that Ctrl-C reaches
    only this script, which then stops them (SIGTERM to each group, SIGKILL after a grace period). The segment
    section's worker (``--queues interactive``) starts with the stack; the concept section starts (and restarts) its
    own ``--queues sam3`` workers with :meth:`worker`."""

    def __init__(self, workdir: Path, image_size: int) -> None:
        self.workdir = workdir
        self.image_size = image_size
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_url = ""
        self.redis_url = ""
        self.env: dict[str, str] = {}

    @contextmanager
    def running(self, interactive: bool = True, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
        """``extra_env``: more variables for every process of this stack (the bulk section raises the API's rate
        limits with it)."""
        with ExitStack() as stack:
            self.redis_url = stack.enter_context(redis_server(self.workdir / "redis", appendonly=False))
            stack.callback(self.stop)
            port = free_port()
            self.api_url = f"http://127.0.0.1:{port}"
            self.env = {
                "SAMQ_REDIS_URL": self.redis_url,
                "SAMQ_STORAGE_BACKEND": "local",
                "SAMQ_STORAGE_DIR": str((self.workdir / "objects").resolve()),
                "SAMQ_STORAGE_PUBLIC_URL": self.api_url,
                "SAMQ_RANDOM_WEIGHTS": "1",
                "SAMQ_WORKER_DEVICE": "auto",
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),
            }
            env = dict(self.env)
            if self.image_size != DEFAULT_IMAGE_SIZE:
                env["SAMQ_IMAGE_SIZE"] = str(self.image_size)
            api = self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], env)
            worker = (
                self._spawn("worker", ["worker", "--queues", Queue.INTERACTIVE.value], env) if interactive else None
            )
            wait_for(lambda: urllib.request.urlopen(f"{self.api_url}/readyz", timeout=2).close(), api, "the API", 60)
            if worker is not None:
                app = self.celery()
                wait_for(lambda: ping(app, Queue.INTERACTIVE, timeout=5), worker, "the worker", 120)
            yield self

    @contextmanager
    def worker(
        self, name: str, queue: Queue, env: dict[str, str], also: tuple[Queue, ...] = ()
    ) -> Iterator[subprocess.Popen[bytes]]:
        """One more ``samq worker --queues <queue>[,<also>…]`` (the stack's env updated with ``env``; a value of
        ``""`` removes that variable), ready when it answers a ping on ``queue``; stopped on exit."""
        merged = {**self.env, **env}
        removed = [key for key, value in merged.items() if value == ""]
        queues = ",".join(q.value for q in (queue, *also))
        process = self._spawn(name, ["worker", "--queues", queues], merged, removed)
        try:
            app = self.celery()
            wait_for(lambda: ping(app, queue, timeout=5), process, f"the {name} worker", 180)
            yield process
        finally:
            self._stop_one(name)

    def celery(self) -> Any:
        return create_celery(QueueSettings(redis_url=self.redis_url))

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], removed: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        full_env = {**os.environ, **env}
        for key in removed or []:
            full_env.pop(key, None)
        process = subprocess.Popen(
            samq_command(*args),
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def _stop_one(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


# ---- images and jobs ----------------------------------------------------------------------------------------------


def synthetic_jpeg(seed: int, width: int = IMAGE_W, height: int = IMAGE_H) -> bytes:
    """A photo-like JPEG (gradients, an ellipse, a rectangle, mild noise): about the size of a real 1024×768 photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[..., 0] = 40 + 120 * xx / width
    pixels[..., 1] = 60 + 80 * yy / height
    pixels[..., 2] = 90 + 60 * rng.random()
    cx, cy = width * rng.uniform(0.35, 0.45), height * rng.uniform(0.45, 0.55)
    pixels[((xx - cx) / (width * 0.2)) ** 2 + ((yy - cy) / (height * 0.25)) ** 2 <= 1] = (230, 190, 40)
    pixels[height // 6 : height // 3, width * 3 // 4 : width * 9 // 10] = (40, 200, 90)
    pixels += rng.normal(0, 6, size=pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def segment_job(model: str, upload_id: str) -> dict[str, Any]:
    return {"type": "segment", "model": model, "image": {"upload": upload_id}, "prompts": [{"points": [POINT]}]}


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
        created, started, finished = (_epoch(job[k]) for k in ("created_at", "started_at", "finished_at"))
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


def run_segment(client: Client, model: str, upload_id: str, expect: str | None) -> Timed:
    sent = time.time()
    started = time.perf_counter()
    job = client.submit(segment_job(model, upload_id), wait=WAIT_SECONDS)
    e2e_ms = (time.perf_counter() - started) * 1000
    received = time.time()
    if job["status"] != "succeeded":
        raise BenchError(f"job {job['id']} ended {job['status']} (error: {job.get('error')}); not a finished job")
    timed = Timed(job, sent, received, e2e_ms)
    if expect is not None and timed.embedding != expect:
        raise BenchError(f"job {job['id']}: expected embedding {expect!r}, got {timed.embedding!r}")
    return timed


def time_healthz(client: Client) -> float:
    """An HTTP round trip to the API that touches nothing else: the floor of any HTTP job submission."""
    started = time.perf_counter()
    client.request("GET", "/healthz")
    return (time.perf_counter() - started) * 1000


def time_ping(app: Any) -> float:
    started = time.perf_counter()
    answer = ping(app, Queue.INTERACTIVE, timeout=10)
    elapsed = (time.perf_counter() - started) * 1000
    if answer != "pong":
        raise BenchError(f"ping answered {answer!r}")
    return elapsed


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---- statistics and reporting -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def hardware() -> dict[str, Any]:
    import torch

    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cpu": model_name,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "python": platform.python_version(),
    }


def hardware_line(hw: dict[str, Any]) -> str:
    device = hw["cuda_device"] or "none (CPU)"
    return (
        f"- hardware: {hw['cpu']}, {hw['cpus_usable']}/{hw['cpu_count']} CPUs usable; torch {hw['torch']} with "
        f"{hw['torch_threads']} threads (default; SAMQ_WORKER_TORCH_THREADS unset); CUDA device: {device}"
    )


def print_header(args: argparse.Namespace, hw: dict[str, Any], upload_bytes: int) -> None:
    print("# samq benchmark")
    print()
    print(hardware_line(hw))
    print(
        f"- settings: model {args.model}, image size {args.image_size}, repeats {args.repeats}, "
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
    print(f"- python {hw['python']}; load average (1/5/15 min) at start: {_load()}")
    print(flush=True)


# ---- main ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="model input size (default 1024)")
    parser.add_argument("--model", default="sam2.1_hiera_tiny")
    parser.add_argument("--repeats", type=int, default=50, help="timed jobs and bare pings in (a) (default 50)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the raw numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, objects)")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        default=None,
        help="run one section: segment ((a) and (b)), concept (SAM3), video (SAM2 tracking) or bulk (batch vs jobs)",
    )
    parser.add_argument(
        "--concept-repeats", type=int, default=5, help="fresh images per phrase count in the concept timings"
    )
    parser.add_argument(
        "--concept-phrases",
        default="1,3",
        metavar="N,M",
        help=f"phrase counts of the timed concept jobs (default 1,3; at most {len(PHRASES)})",
    )
    parser.add_argument(
        "--memory-image",
        default=f"{MEMORY_W}x{MEMORY_H}",
        metavar="WxH",
        help=f"synthetic image of the concept memory test (default {MEMORY_W}x{MEMORY_H})",
    )
    parser.add_argument("--memory-phrases", type=int, default=8, help="phrases of the memory test's jobs (default 8)")
    parser.add_argument("--no-memory", action="store_true", help="skip the concept memory test")
    parser.add_argument("--video-image-size", type=int, default=256, help="SAM2 input size on the CPU (default 256)")
    parser.add_argument("--video-short-frames", type=int, default=60, help="short video run, and speed (default 60)")
    parser.add_argument("--video-long-frames", type=int, default=600, help="long video run (default 600)")
    parser.add_argument("--video-repeats", type=int, default=5, help="timed runs per video flow (default 5)")
    parser.add_argument(
        "--bulk-n",
        type=int,
        default=BULK_N,
        help=f"images per bulk measure (default {BULK_N}; 2..{MAX_BATCH_ITEMS_INLINE})",
    )
    parser.add_argument(
        "--bulk-repeats", type=int, default=BULK_REPEATS, help=f"runs of each bulk measure (default {BULK_REPEATS})"
    )
    parser.add_argument("--video-child", default=None, help=argparse.SUPPRESS)  # internal: one measured process
    args = parser.parse_args(argv)
    if args.video_child is not None:
        print(json.dumps(video_child(VideoRun(**json.loads(args.video_child)))))
        return 0
    if min(args.repeats, args.concept_repeats, args.video_repeats, args.bulk_repeats) < 1:
        parser.error("--repeats, --concept-repeats, --video-repeats and --bulk-repeats must be at least 1")
    if not 2 <= args.bulk_n <= MAX_BATCH_ITEMS_INLINE:
        parser.error(f"--bulk-n must be within 2..{MAX_BATCH_ITEMS_INLINE} (the items a batch request lists)")
    if min(args.video_short_frames, args.video_long_frames) < 2:
        parser.error("--video-short-frames and --video-long-frames must be at least 2")
    if args.video_image_size < 64 or args.video_image_size % 32:
        parser.error("--video-image-size must be a multiple of 32, at least 64")
    try:
        args.concept_phrases = [int(v) for v in args.concept_phrases.split(",")]
        args.memory_image = tuple(int(v) for v in args.memory_image.lower().split("x"))
    except ValueError:
        parser.error("--concept-phrases takes comma-separated counts, --memory-image WIDTHxHEIGHT")
    if not all(1 <= n <= len(PHRASES) for n in args.concept_phrases):
        parser.error(f"--concept-phrases: each count within 1..{len(PHRASES)}")
    if len(args.memory_image) != 2 or min(args.memory_image) < 1:
        parser.error("--memory-image takes WIDTHxHEIGHT")
    if not 1 <= args.memory_phrases <= len(PHRASES):
        parser.error(f"--memory-phrases must be within 1..{len(PHRASES)}")
    sections = [args.only] if args.only else list(SECTIONS)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="samq-bench-"))
    stack = Stack(workdir, args.image_size)
    bulk_stack = Stack(workdir / "bulk", args.image_size)  # the bulk section's own stack: see measure_bulk
    try:
        with ExitStack() as running:
            if "segment" in sections or "concept" in sections:
                running.enter_context(stack.running(interactive="segment" in sections))
            hw = hardware()
            raw: dict[str, Any] = {}
            if "segment" in sections:
                raw.update(measure(args, stack, hw))
            else:
                print("# samq benchmark")
                print()
                print(hardware_line(hw))
                print(f"- python {hw['python']}; load average (1/5/15 min) at start: {_load()}")
                print(flush=True)
                raw["hardware"] = hw
            if "concept" in sections:
                if "segment" in sections:
                    print()
                raw["concept"] = measure_concept(args, stack, hw)
            if "video" in sections:
                if len(sections) > 1:
                    print()
                raw["video"] = measure_video(args, workdir / "video", hw)
            if "bulk" in sections:
                if len(sections) > 1:
                    print()
                raw["bulk"] = measure_bulk(args, bulk_stack, hw)
            if args.json is not None:
                args.json.write_text(json.dumps(raw, indent=2))
                print(f"raw numbers: {args.json}")
            return 0
    except KeyboardInterrupt:
        print("\ninterrupted; the stack was stopped", file=sys.stderr)
        return 130
    except Exception as e:
        print(f"bench: {type(e).__name__}: {e}", file=sys.stderr)
        print(stack.log_tail(), file=sys.stderr)
        if "bulk" in sections:
            print(bulk_stack.log_tail(), file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"(kept {workdir})", file=sys.stderr)
        else:
            _remove_tree(workdir)


def measure(args: argparse.Namespace, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    client = Client(stack.api_url, timeout=WAIT_SECONDS + 10)
    app = stack.celery()
    warm_image = synthetic_jpeg(seed=0)
    print_header(args, hw, len(warm_image))

    # Warm-up: load the model and cache this image's embedding in the worker; warm the client's Celery connections.
    upload = client.upload(warm_image, "image/jpeg")["id"]
    t0 = time.perf_counter()
    first = run_segment(client, args.model, upload, expect="miss")
    print(
        f"warm-up: model load + encode + decode {ms((time.perf_counter() - t0) * 1000)} "
        f"(worker {ms(first.total_ms)}, model {ms(first.model_ms)})",
        flush=True,
    )
    for _ in range(3):
        run_segment(client, args.model, upload, expect="memory")
        time_ping(app)
        time_healthz(client)

    # (a) interleaved: job then ping on even rounds, ping then job on odd ones.
    # An HTTP round trip to /healthz rides along (informational: HTTP's own floor, not part of the criterion).
    hits: list[Timed] = []
    pings: list[float] = []
    healthz: list[float] = []
    for i in range(args.repeats):
        if i % 2 == 0:
            hits.append(run_segment(client, args.model, upload, expect="memory"))
            pings.append(time_ping(app))
        else:
            pings.append(time_ping(app))
            hits.append(run_segment(client, args.model, upload, expect="memory"))
        healthz.append(time_healthz(client))
    print(f"(a): {len(hits)} cache-hit jobs and {len(pings)} bare pings, interleaved", flush=True)

    # (b) K fresh images: the first job encodes (miss), the second on the same image hits the in-process cache.
    firsts: list[Timed] = []
    seconds: list[Timed] = []
    for seed in range(1, FRESH_IMAGES + 1):
        fresh = client.upload(synthetic_jpeg(seed), "image/jpeg")["id"]
        firsts.append(run_segment(client, args.model, fresh, expect="miss"))
        seconds.append(run_segment(client, args.model, fresh, expect="memory"))
    print(f"(b): {FRESH_IMAGES} fresh images, two jobs each", flush=True)
    print()

    overhead = [t.overhead_ms for t in hits]
    over_p50, ping_p50 = pct(overhead, 50), pct(pings, 50)
    ratio = over_p50 / ping_p50
    first_med = statistics.median(t.total_ms for t in firsts)
    second_med = statistics.median(t.total_ms for t in seconds)
    cache_ratio = second_med / first_med
    a_ok = over_p50 <= OVERHEAD_TARGET_MS and ratio <= OVERHEAD_RATIO_TARGET

    print("## Results")
    print()
    print("| metric | value | target | pass/fail |")
    print("|---|---|---|---|")
    print(
        f"| (a) e2e segment, cache hit, minus model time, p50 | {ms(over_p50)} (p90 {ms(pct(overhead, 90))}) "
        f"| ≤ {OVERHEAD_TARGET_MS:.0f} ms and ≤ {OVERHEAD_RATIO_TARGET}× bare | {verdict(a_ok)} "
        f"(≤ {OVERHEAD_TARGET_MS:.0f} ms: {verdict(over_p50 <= OVERHEAD_TARGET_MS)}; "
        f"≤ {OVERHEAD_RATIO_TARGET}× bare: {verdict(ratio <= OVERHEAD_RATIO_TARGET)}) |"
    )
    print(f"| (a) bare Celery round trip p50 | {ms(ping_p50)} (p90 {ms(pct(pings, 90))}) | | |")
    print(
        f"| (a) overhead / bare (p50) | {ratio:.2f}× | ≤ {OVERHEAD_RATIO_TARGET}× "
        f"| {verdict(ratio <= OVERHEAD_RATIO_TARGET)} |"
    )
    print(
        f"| (b) first job worker time (encode) | {ms(first_med)} (median of {FRESH_IMAGES}; "
        f"model {ms(statistics.median(t.model_ms for t in firsts))}) | | |"
    )
    print(
        f"| (b) second job worker time (cache hit) | {ms(second_med)} (median of {FRESH_IMAGES}; "
        f"model {ms(statistics.median(t.model_ms for t in seconds))}) | | |"
    )
    print(
        f"| (b) second / first | {cache_ratio:.3f} | ≤ {SECOND_OVER_FIRST_TARGET:.2f} "
        f"| {verdict(cache_ratio <= SECOND_OVER_FIRST_TARGET)} |"
    )
    print()

    # Where the (a) time goes: the job's own timestamps (one host, one clock) split the client's e2e time.
    def row(label: str, values: list[float], note: str = "") -> None:
        print(f"| {label} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | {note} |")

    print("## (a) breakdown, cache-hit jobs (ms)")
    print()
    print("| stage | p50 | p90 | what |")
    print("|---|---|---|---|")
    row("client e2e", [t.e2e_ms for t in hits], "POST /v1/jobs (Prefer: wait) → 200 with the finished job")
    row("model (decoder)", [t.model_ms for t in hits], "summary.timings.model_ms")
    row("overhead = e2e − model", overhead, "criterion (a)")
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
        "JobStore.start commit, lease thread start and stop, JobStore.succeed read",
    )
    row(
        "· finish → client",
        [t.stages["egress_ms"] for t in hits],
        "JobStore.succeed, publish, wait_terminal wake, GET, render, HTTP",
    )
    row("bare Celery round trip", pings, "tasks.dispatch.ping")
    row("HTTP GET /healthz", healthz, "informational: the HTTP + waitress + Flask floor")
    print()
    print(
        f"Load average (1/5/15 min) at the end: {_load()} on {hw['cpus_usable']} CPUs. Other processes on these CPUs "
        "inflate the model times and the overhead; compare runs on an otherwise idle machine."
    )
    if not a_ok or cache_ratio > SECOND_OVER_FIRST_TARGET:
        print("Some targets were missed (FAIL above); the numbers are a measurement, the exit status stays 0.")

    return {
        "settings": {
            "model": args.model,
            "image_size": args.image_size,
            "repeats": args.repeats,
            "random_weights": True,
            "image": {"width": IMAGE_W, "height": IMAGE_H, "bytes": len(warm_image)},
        },
        "hardware": hw,
        "load_at_end": _load(),
        "warmup": first.raw(),
        "a": {"jobs": [t.raw() for t in hits], "ping_ms": pings, "healthz_ms": healthz},
        "b": {"first": [t.raw() for t in firsts], "second": [t.raw() for t in seconds]},
        "summary": {
            "overhead_p50_ms": over_p50,
            "overhead_p90_ms": pct(overhead, 90),
            "ping_p50_ms": ping_p50,
            "ping_p90_ms": pct(pings, 90),
            "overhead_over_ping": ratio,
            "first_total_ms_median": first_med,
            "second_total_ms_median": second_med,
            "second_over_first": cache_ratio,
            "a_pass": a_ok,
            "b_pass": cache_ratio <= SECOND_OVER_FIRST_TARGET,
        },
    }


# ---- SAM3 concept section ------------------------------------------------------------------------------------------


def concept_job(
    upload_id: str, phrases: list[str], threshold: float = CONCEPT_THRESHOLD, max_detections: int = 100
) -> dict[str, Any]:
    return {
        "type": "concept",
        "model": "sam3",
        "image": {"upload": upload_id},
        "prompts": [{"text": phrase} for phrase in phrases],
        "threshold": threshold,
        "max_detections": max_detections,
    }


class ConceptTimed:
    """One concept job: the client's end-to-end time and the worker's ``summary`` (timings, instances kept)."""

    def __init__(self, job: dict[str, Any], e2e_ms: float, phrases: int) -> None:
        self.job = job
        self.e2e_ms = e2e_ms
        self.phrases = phrases
        summary = job["result"]["summary"]
        timings = summary["timings"]
        self.embedding: str = summary["embedding"]
        self.encode_ms = float(timings["encode_ms"])
        self.detect_ms = float(timings["detect_ms"])
        self.model_ms = float(timings["model_ms"])
        self.total_ms = float(timings["total_ms"])
        self.instances = int(summary["instances"])
        self.per_prompt: list[int] = list(summary["instances_per_prompt"])

    @property
    def per_phrase_ms(self) -> float:
        return self.detect_ms / self.phrases

    def raw(self) -> dict[str, Any]:
        return {
            "id": self.job["id"],
            "embedding": self.embedding,
            "phrases": self.phrases,
            "e2e_ms": self.e2e_ms,
            "encode_ms": self.encode_ms,
            "detect_ms": self.detect_ms,
            "model_ms": self.model_ms,
            "total_ms": self.total_ms,
            "instances": self.instances,
            "instances_per_prompt": self.per_prompt,
        }


def run_concept(client: Client, spec: dict[str, Any], expect: str | None) -> ConceptTimed:
    """Submit with ``Prefer: wait``; a job still running when the wait ends is polled (its e2e time is then coarse)."""
    started = time.perf_counter()
    job = client.submit(spec, wait=WAIT_SECONDS)
    if job["status"] not in ("succeeded", "failed", "canceled"):
        job = client.wait(job["id"], timeout=CONCEPT_JOB_TIMEOUT, interval=0.05)
        job = client.job(job["id"])
    e2e_ms = (time.perf_counter() - started) * 1000
    if job["status"] != "succeeded":
        raise BenchError(f"job {job['id']} ended {job['status']} (error: {job.get('error')}); not a finished job")
    timed = ConceptTimed(job, e2e_ms, len(spec["prompts"]))
    if expect is not None and timed.embedding != expect:
        raise BenchError(f"job {job['id']}: expected embedding {expect!r}, got {timed.embedding!r}")
    return timed


def pool_child(worker: subprocess.Popen[bytes]) -> Any:
    """The prefork pool's one child of a ``samq worker`` (concurrency 1): the process that runs the jobs."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    children = psutil.Process(worker.pid).children()
    if len(children) != 1:
        raise BenchError(f"expected one pool process under the worker {worker.pid}, found {[c.pid for c in children]}")
    return children[0]


def proc_status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no {field}")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (``echo 5 > /proc/<pid>/clear_refs``, Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return proc_status_bytes(pid, "VmHWM") <= proc_status_bytes(pid, "VmRSS") + 8 * 1024 * 1024


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, process: Any, interval: float = RSS_SAMPLE_SECONDS) -> None:
        import threading

        self.process = process
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        while True:
            try:
                rss = int(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return


def gb(value: float) -> str:
    return f"{value / GB:.3f} GB"


def measure_concept(args: argparse.Namespace, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    from worker.runners.sam3 import PATCH_SIZE, shrunk_concept_config

    client = Client(stack.api_url, timeout=WAIT_SECONDS + 10)
    size = args.image_size - args.image_size % PATCH_SIZE
    num_queries = int(getattr(shrunk_concept_config(size).detr_decoder_config, "num_queries", 0))
    mem_w, mem_h = args.memory_image
    mem_phrases = list(PHRASES[: args.memory_phrases])
    print("## SAM3 concept")
    print()
    print(
        f"- settings: model sam3, SHRUNK architecture with RANDOM weights (SAMQ_RANDOM_WEIGHTS=1: every part a few "
        f"layers of 32–64 channels, {num_queries} queries per phrase), input {size} px (SAMQ_IMAGE_SIZE="
        f"{args.image_size}, rounded down to a multiple of {PATCH_SIZE}); one worker --queues sam3 (prefork, "
        f"concurrency 1), device auto → {'cuda' if hw['cuda_device'] else 'cpu'}"
    )
    print(
        f"- timed jobs: {args.concept_repeats} fresh synthetic {IMAGE_W}×{IMAGE_H} JPEGs per phrase count "
        f"{args.concept_phrases}, phrases from {list(PHRASES)} in order, threshold {CONCEPT_THRESHOLD}, "
        "max_detections 100; each image gets a first job (encode: miss) then a second, identical one (memory hit)"
    )
    print(f"- load average (1/5/15 min) at start: {_load()}")
    print(flush=True)
    raw: dict[str, Any] = {
        "settings": {
            "image_size": args.image_size,
            "sam3_input_size": size,
            "num_queries": num_queries,
            "random_weights": True,
            "repeats": args.concept_repeats,
            "phrase_counts": args.concept_phrases,
            "threshold": CONCEPT_THRESHOLD,
        }
    }

    # Timings: one sam3 worker; a warm-up job loads the model, then fresh images, two jobs each.
    firsts: dict[int, list[ConceptTimed]] = {}
    seconds: dict[int, list[ConceptTimed]] = {}
    with stack.worker("sam3", Queue.SAM3, {"SAMQ_IMAGE_SIZE": str(args.image_size)}):
        upload = client.upload(synthetic_jpeg(seed=1000), "image/jpeg")["id"]
        t0 = time.perf_counter()
        warm = run_concept(client, concept_job(upload, [PHRASES[0]]), expect="miss")
        run_concept(client, concept_job(upload, [PHRASES[0]]), expect="memory")
        print(
            f"concept warm-up: model load + encode + detect {ms((time.perf_counter() - t0) * 1000)} "
            f"(worker {ms(warm.total_ms)})",
            flush=True,
        )
        seed = 1001
        for repeat in range(args.concept_repeats):
            for count in args.concept_phrases:
                phrases = list(PHRASES[:count])
                fresh = client.upload(synthetic_jpeg(seed), "image/jpeg")["id"]
                seed += 1
                firsts.setdefault(count, []).append(run_concept(client, concept_job(fresh, phrases), expect="miss"))
                seconds.setdefault(count, []).append(run_concept(client, concept_job(fresh, phrases), expect="memory"))
            print(f"concept timings: round {repeat + 1}/{args.concept_repeats}", flush=True)
    raw["timings"] = {
        str(count): {"first": [t.raw() for t in firsts[count]], "second": [t.raw() for t in seconds[count]]}
        for count in args.concept_phrases
    }

    memory: dict[int, dict[str, Any]] = {}
    if not args.no_memory:
        big = synthetic_jpeg(seed=2000, width=mem_w, height=mem_h)
        big_upload = client.upload(big, "image/jpeg")["id"]
        small_upload = client.upload(synthetic_jpeg(seed=2001), "image/jpeg")["id"]
        for max_detections in MEMORY_MAX_DETECTIONS:
            memory[max_detections] = memory_run(
                client, stack, args, big_upload, small_upload, mem_phrases, max_detections, num_queries
            )
        raw["memory"] = {
            "image": {"width": mem_w, "height": mem_h, "bytes": len(big)},
            "phrases": mem_phrases,
            "threshold": 0.0,
            "runs": {str(k): v for k, v in memory.items()},
        }

    gpu = gpu_row(client, stack, hw, args.concept_repeats)
    raw["gpu"] = gpu
    print()

    # ---- the table ----
    print("## Concept results")
    print()
    print("| metric | value | target | pass/fail |")
    print("|---|---|---|---|")
    n = args.concept_repeats
    encodes = [t.encode_ms for count in args.concept_phrases for t in firsts[count]]
    print(
        f"| concept: image encode (first job on an image, miss) | {ms(statistics.median(encodes))} "
        f"(median of {len(encodes)}) | | |"
    )
    for count in args.concept_phrases:
        first, second = firsts[count], seconds[count]
        label = f"concept, {count} phrase{'s' if count > 1 else ''}"
        kept = "/".join(str(k) for k in sorted({t.instances for t in first + second}))
        per_phrase = statistics.median(t.per_phrase_ms for t in first)
        detect = statistics.median(t.detect_ms for t in first)
        print(
            f"| {label}: detect per phrase (detect_ms / {count}) | {ms(per_phrase)} (median of {n}; detect_ms "
            f"{ms(detect)}; instances kept: {kept}) | | |"
        )
        first_total = statistics.median(t.total_ms for t in first)
        second_total = statistics.median(t.total_ms for t in second)
        print(
            f"| {label}: first job (miss), worker / e2e | {ms(first_total)} / "
            f"{ms(statistics.median(t.e2e_ms for t in first))} (median of {n}) | | |"
        )
        print(
            f"| {label}: second job, same image (memory hit), worker / e2e | {ms(second_total)} / "
            f"{ms(statistics.median(t.e2e_ms for t in second))} (median of {n}; detect "
            f"{ms(statistics.median(t.detect_ms for t in second))}) | | |"
        )
        print(f"| {label}: second / first (worker time) | {second_total / first_total:.3f} | | |")
    if memory:
        for max_detections, run in memory.items():
            print(
                f"| concept memory: {mem_w}×{mem_h}, {len(mem_phrases)} phrases, threshold 0, "
                f"max_detections={max_detections}: peak worker RSS | {gb(run['peak_bytes'])} "
                f"({run['instances']} instances kept of {run['candidates']} candidates; job {ms(run['total_ms'])}) "
                "| | |"
            )
        diff = memory[100]["peak_bytes"] - memory[5]["peak_bytes"]
        ok = diff <= MEMORY_TARGET_BYTES
        raw["memory"]["difference_bytes"] = diff
        raw["memory"]["pass"] = ok
        print(
            f"| concept memory: peak RSS, max_detections=100 − max_detections=5 | {gb(diff)} "
            f"| ≤ {gb(MEMORY_TARGET_BYTES)} | {verdict(ok)} |"
        )
    if gpu["measured"]:
        ok = gpu["per_image_ms"] <= META_H200_MS
        print(
            f"| concept GPU: full-size SAM3, bf16 autocast, model time per image (encode + 1 phrase) "
            f"| {ms(gpu['per_image_ms'])} (median of {gpu['repeats']}; {gpu['device']}) "
            f"| ≤ {META_H200_MS:.0f} ms (Meta, H200) | {verdict(ok)} |"
        )
    else:
        print(
            "| concept GPU: full-size SAM3, bf16, time per image | not measured (see below) "
            f"| ≤ {META_H200_MS:.0f} ms (Meta, H200) | n/a |"
        )
    print()
    if memory:
        runs = memory.values()
        print(
            "Memory: peak RSS of the worker's pool process during the big job, in a fresh worker per setting (warmed "
            "with one small concept job); peak = the larger of its VmHWM (reset after the warm-up) and its RSS "
            f"sampled every {RSS_SAMPLE_SECONDS * 1000:.0f} ms: "
            + "; ".join(
                f"max_detections={k}: VmHWM {gb(r['hwm_bytes'])}"
                f"{'' if r['hwm_reset'] else ' (NOT reset: includes the warm-up)'}, sampled max "
                f"{gb(r['sampled_peak_bytes'])} ({r['samples']} samples), RSS before the job "
                f"{gb(r['rss_before_bytes'])}"
                for k, r in memory.items()
            )
            + f". For scale: N full-size boolean masks held at once would be N × {mem_w} × {mem_h} B (the worker "
            + "streams them, a chunk at a time, into the encoders instead): "
            + ", ".join(f"{gb(r['instances'] * mem_w * mem_h)} for {r['instances']}" for r in runs)
            + "."
        )
    if not gpu["measured"]:
        print(f"GPU row not measured: {gpu['reason']}.")
    print(
        f"Load average (1/5/15 min) at the end: {_load()}. Random weights: speed is the shrunk architecture's, not "
        "the released model's; with threshold 0.5 the random heads keep few or no instances, so the per-phrase time "
        "holds little mask upsampling."
    )
    print(flush=True)
    return raw


def gpu_row(client: Client, stack: Stack, hw: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The released SAM3 on the GPU (bf16 autocast, as the worker runs it there): model time per image, when a GPU
    AND the released weights (a checkpoint folder; the hub repository is gated, nothing is downloaded) are here."""
    from worker.settings import WorkerSettings
    from worker.weights import local_pretrained_dir

    folder = local_pretrained_dir("sam3", WorkerSettings(random_weights=False))
    folder = folder if folder.is_absolute() else REPO / folder
    has_weights = (folder / "config.json").is_file()
    weights_note = (
        f"the released weights are in {folder}"
        if has_weights
        else f"the released weights (facebook/sam3, gated) are not here either: no checkpoint folder {folder} "
        "(SAMQ_WORKER_MODELS_DIR), and none can be downloaded on this machine"
    )
    if not hw["cuda_device"]:
        return {"measured": False, "reason": f"no CUDA device (torch.cuda.is_available() is false); {weights_note}"}
    if not has_weights:
        return {
            "measured": False,
            "reason": f"a CUDA device ({hw['cuda_device']}) is here but {weights_note}; random weights would time "
            "the shrunk model, not the released one",
        }
    env = {"SAMQ_RANDOM_WEIGHTS": "", "SAMQ_IMAGE_SIZE": "", "SAMQ_WORKER_DEVICE": "cuda"}
    env["SAMQ_WORKER_ALLOW_DOWNLOAD"] = "false"
    firsts: list[ConceptTimed] = []
    with stack.worker("sam3-gpu", Queue.SAM3, env):
        upload = client.upload(synthetic_jpeg(seed=3000), "image/jpeg")["id"]
        run_concept(client, concept_job(upload, [PHRASES[0]]), expect="miss")  # model load, CUDA warm-up
        for seed in range(3001, 3004):  # more warm-up: cuDNN/cuBLAS autotuning on fresh inputs
            run_concept(
                client, concept_job(client.upload(synthetic_jpeg(seed), "image/jpeg")["id"], [PHRASES[0]]), None
            )
        for seed in range(3100, 3100 + repeats):
            fresh = client.upload(synthetic_jpeg(seed), "image/jpeg")["id"]
            firsts.append(run_concept(client, concept_job(fresh, [PHRASES[0]]), expect="miss"))
    per_image = statistics.median(t.model_ms for t in firsts)
    print(f"concept GPU: {len(firsts)} fresh images, model time per image {ms(per_image)}", flush=True)
    return {
        "measured": True,
        "device": hw["cuda_device"],
        "weights": str(folder),
        "repeats": len(firsts),
        "per_image_ms": per_image,
        "jobs": [t.raw() for t in firsts],
    }


def memory_run(
    client: Client,
    stack: Stack,
    args: argparse.Namespace,
    big_upload: str,
    small_upload: str,
    phrases: list[str],
    max_detections: int,
    num_queries: int,
) -> dict[str, Any]:
    """One fresh sam3 worker: warm it with a small job, reset its pool process's VmHWM, run the big job, read it."""
    name = f"sam3-memory-{max_detections}"
    with stack.worker(name, Queue.SAM3, {"SAMQ_IMAGE_SIZE": str(args.image_size)}) as worker:
        run_concept(client, concept_job(small_upload, [PHRASES[0]]), expect="miss")
        child = pool_child(worker)
        reset = reset_peak_rss(child.pid)
        rss_before = proc_status_bytes(child.pid, "VmRSS")
        spec = concept_job(big_upload, phrases, threshold=0.0, max_detections=max_detections)
        with RssSampler(child) as sampler:
            job = run_concept(client, spec, expect="miss")
        if pool_child(worker).pid != child.pid:
            raise BenchError(f"the pool process of {name} was replaced during the job: its peak is unknown")
        hwm = proc_status_bytes(child.pid, "VmHWM")
    peak = max(hwm, sampler.peak)  # VmHWM is the kernel's own peak; sampling can only miss a short spike
    result = {
        "max_detections": max_detections,
        "pid": child.pid,
        "hwm_reset": reset,
        "hwm_bytes": hwm,
        "sampled_peak_bytes": sampler.peak,
        "samples": sampler.samples,
        "rss_before_bytes": rss_before,
        "peak_bytes": peak,
        "instances": job.instances,
        "instances_per_prompt": job.per_prompt,
        "candidates": len(phrases) * num_queries,  # threshold 0 keeps every query's detection
        "total_ms": job.total_ms,
        "job": job.raw(),
    }
    print(
        f"concept memory, max_detections={max_detections}: peak {gb(peak)}, {job.instances} instances kept",
        flush=True,
    )
    return result


# ---- SAM2 video section -------------------------------------------------------------------------------------------


@dataclass
class VideoRun:
    """What one ``--video-child`` process does: load each flow's model, then run the flows in turn over the first
    ``frames`` frames of the clip, ``warmup`` untimed rounds then ``repeats`` timed ones. Flows: ``"samq"`` (the
    streaming tracker over the mp4 at ``clip``), ``"meta"`` (``SAM2VideoPredictor`` on the JPEG ``folder``)."""

    flows: list[str]
    frames: int
    clip: str
    folder: str
    box: list[float]
    image_size: int
    device: str = "cpu"
    repeats: int = 1
    warmup: int = 0


Flow = Callable[[], float]
"""One tracking run over the clip; returns the seconds on the clock."""


def video_child(run: VideoRun) -> dict[str, Any]:
    """The ``--video-child`` process: per flow, the seconds of each timed run; the process's own peak RSS (VmHWM)."""
    from worker.settings import WorkerSettings

    settings = WorkerSettings(
        random_weights=True, image_size=run.image_size, device=run.device, seed=0, allow_download=False
    )
    loaders = {"samq": streaming_flow, "meta": meta_flow}
    flows = {name: loaders[name](run, settings) for name in run.flows}
    seconds: dict[str, list[float]] = {name: [] for name in flows}
    for round_ in range(run.warmup + run.repeats):
        for name, flow in flows.items():
            elapsed = flow()
            if round_ >= run.warmup:
                seconds[name].append(elapsed)
    return {"seconds": seconds, "hwm_bytes": proc_status_bytes(os.getpid(), "VmHWM")}


def streaming_flow(run: VideoRun, settings: WorkerSettings) -> Flow:
    """samq's path: probe the mp4, decode lazily, track with ``Sam2VideoRunner``, binarized masks per frame."""
    from worker.runners.sam2_video import Sam2VideoRunner
    from worker.runners.video import Seed
    from worker.video import VideoFrames, probe, select_frames

    runner = Sam2VideoRunner.load(VIDEO_MODEL, settings)
    clip = Path(run.clip)
    seed = Seed(obj_id=1, box=np.array(run.box, dtype=np.float32))

    def once() -> float:
        started = time.perf_counter()
        info = probe(
            clip,
            max_seconds=settings.max_video_seconds,
            max_pixels=settings.max_video_pixels,
            max_frames=settings.max_video_frames,
        )
        with VideoFrames(clip, info, select_frames(info, end=run.frames - 1)) as frames:
            session = runner.open(frames)
            session.add(0, [seed])
            tracked = sum(1 for _ in session.propagate(0, len(frames) - 1))  # FrameTracks.masks: bool, video size
        elapsed = _clock(run.device, started)
        _check_tracked("samq", tracked, run.frames)
        return elapsed

    return once


def meta_flow(run: VideoRun, settings: WorkerSettings) -> Flow:
    """Meta's documented flow: ``init_state`` on the JPEG folder (not timed), a box, ``propagate_in_video`` (timed,
    with the box's frame), under inference mode and bf16 autocast (required on CPU too)."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from worker.runners.sam2_video import _has_connected_components
    from worker.weights import model_card

    torch.manual_seed(settings.seed)  # what sam2_build does for the runner: the same random weights
    predictor = build_sam2_video_predictor(
        model_card(VIDEO_MODEL).config,
        None,
        device=run.device,
        hydra_overrides_extra=[f"++model.image_size={run.image_size}"],
    )
    if not _has_connected_components():
        predictor.fill_hole_area = 0  # as the runner: without sam2's CUDA extension hole filling only warns
    box = np.array(run.box, dtype=np.float32)

    def once() -> float:
        with torch.inference_mode(), torch.autocast(run.device, dtype=torch.bfloat16):
            state = predictor.init_state(run.folder)
            started = time.perf_counter()
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box)
            tracked = sum(1 for _ in predictor.propagate_in_video(state))
            elapsed = _clock(run.device, started)
        _check_tracked("meta", tracked, run.frames)
        return elapsed

    return once


def _clock(device: str, started: float) -> float:
    """Seconds since ``started``, once the device has finished its queued work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - started


def _check_tracked(flow: str, tracked: int, expected: int) -> None:
    if tracked != expected:
        raise BenchError(f"{flow}: tracked {tracked} frames, expected {expected}")


def run_video_child(run: VideoRun, log: Path) -> dict[str, Any]:
    """Run ``run`` in a fresh process; its result plus ``peak_bytes``: the larger of its VmHWM (whole lifetime) and
    its RSS sampled from here every few ms."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    command = [sys.executable, str(Path(__file__).resolve()), "--video-child", json.dumps(asdict(run))]
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **CHILD_ENV}, stdout=subprocess.PIPE, stderr=stderr
        )
        with RssSampler(psutil.Process(process.pid)) as sampler:
            out, _ = process.communicate()
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise BenchError(f"video child {run.flows} ({run.frames} frames) exited {process.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["sampled_peak_bytes"] = sampler.peak
    result["peak_bytes"] = max(result["hwm_bytes"], sampler.peak)
    return result


def write_video_inputs(folder: Path, frames: list[int]) -> tuple[Path, list[float], dict[int, Path]]:
    """The synthetic mp4 (one ellipse drifting right and down, ``max(frames)`` frames), the ellipse's box on frame 0,
    and per length a JPEG folder of the mp4's first frames as decoded (what Meta's ``init_state`` reads)."""
    from tests.support.videos import Shape, moving_shapes, write_clip
    from worker.video import VideoFrames, probe, select_frames

    folder.mkdir(parents=True, exist_ok=True)
    shape = Shape(colour=(220, 60, 40), size=(40, 30), start=(20.0, 40.0), velocity=(0.15, 0.05), kind="ellipse")
    clip = folder / "clip.mp4"
    write_clip(clip, (frame for frame, _ in moving_shapes(max(frames), VIDEO_W, VIDEO_H, [shape])), fps=VIDEO_FPS)
    truth = next(moving_shapes(1, VIDEO_W, VIDEO_H, [shape]))[1][0]
    box = [float(truth.x0), float(truth.y0), float(truth.x1), float(truth.y1)]
    info = probe(clip, max_seconds=math.inf, max_pixels=VIDEO_W * VIDEO_H, max_frames=max(frames))
    folders: dict[int, Path] = {}
    with VideoFrames(clip, info, select_frames(info)) as decoded:
        for count in frames:
            folders[count] = folder / f"jpeg-{count}"
            folders[count].mkdir(exist_ok=True)
            for index in range(count):
                Image.fromarray(decoded[index]).save(folders[count] / f"{index:05d}.jpg", quality=95)
    return clip, box, folders


def measure_video(args: argparse.Namespace, folder: Path, hw: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    short, long = args.video_short_frames, args.video_long_frames
    size, repeats = args.video_image_size, args.video_repeats
    clip, box, folders = write_video_inputs(folder, [short, long])
    log = folder / "children.log"
    print("## SAM2 video")
    print()
    print(
        f"- settings: {VIDEO_MODEL} with RANDOM weights (seed 0), input {size} px, device cpu, one object seeded with "
        f"a box {box} on frame 0; synthetic {VIDEO_W}×{VIDEO_H} H.264 mp4 at {VIDEO_FPS} fps (one drifting "
        "ellipse); every measurement in a fresh `scripts/bench.py --video-child` process (TORCH_COMPILE_DISABLE=1, "
        "TQDM_DISABLE=1)"
    )
    print(f"- load average (1/5/15 min) at start: {_load()}")
    print(flush=True)

    def memory(flow: str, frames: int) -> dict[str, Any]:
        run = VideoRun([flow], frames, str(clip), str(folders[frames]), box, size)
        result = run_video_child(run, log)
        seconds = result["seconds"][flow][0]
        print(
            f"video memory, {flow}, {frames} frames: peak {gb(result['peak_bytes'])} ({seconds:.0f} s; load {_load()})",
            flush=True,
        )
        return result

    memory_runs = {flow: {frames: memory(flow, frames) for frames in (short, long)} for flow in ("samq", "meta")}

    def speed(device: str, image_size: int) -> dict[str, Any]:
        run = VideoRun(["samq", "meta"], short, str(clip), str(folders[short]), box, image_size, device, repeats, 1)
        result = run_video_child(run, log)
        result["fps"] = {flow: short / statistics.median(s) for flow, s in result["seconds"].items()}
        result["best_fps"] = {flow: short / min(s) for flow, s in result["seconds"].items()}
        fps = ", ".join(f"{flow} {value:.2f} fps" for flow, value in result["fps"].items())
        print(f"video speed, {device}, {image_size} px: {fps} (load {_load()})", flush=True)
        return result

    cpu = speed("cpu", size)
    gpu = speed("cuda", VIDEO_GPU_IMAGE_SIZE) if hw["cuda_device"] else None
    print()

    print("## Video results")
    print()
    print("| metric | value | target | pass/fail |")
    print("|---|---|---|---|")
    ratios: dict[str, float] = {}
    for flow, label in (("samq", "samq streaming tracker"), ("meta", "Meta's SAM2VideoPredictor (reference)")):
        runs = memory_runs[flow]
        for frames in (short, long):
            print(f"| video memory, {label}, {frames} frames: peak RSS | {gb(runs[frames]['peak_bytes'])} | | |")
        ratios[flow] = runs[long]["peak_bytes"] / runs[short]["peak_bytes"]
        target = f"≤ {FLAT_MEMORY_TARGET:.2f}" if flow == "samq" else "none (contrast)"
        outcome = verdict(ratios[flow] <= FLAT_MEMORY_TARGET) if flow == "samq" else "n/a"
        print(f"| video memory, {label}: {long} / {short} frames | {ratios[flow]:.3f} | {target} | {outcome} |")
    speed_rows(f"CPU, {size} px", cpu, short, repeats)
    if gpu is not None:
        speed_rows(f"GPU ({hw['cuda_device']}), {VIDEO_GPU_IMAGE_SIZE} px, random weights", gpu, short, repeats)
    else:
        print(f"| video speed, GPU, {VIDEO_GPU_IMAGE_SIZE} px: samq / Meta | not measured (see below) | ≥ 0.9× | n/a |")
    print()
    print(
        "Memory: peak RSS of the whole process (imports, model, tracking), the larger of its VmHWM and its RSS "
        f"sampled every {RSS_SAMPLE_SECONDS * 1000:.0f} ms; one process per run. Meta's predictor holds every frame "
        "(init_state) and every frame's outputs; samq's tracker decodes on demand and keeps the attention window. "
        f"Speed: {short} frames; samq = probe + decode + track + binarize, Meta = add_new_points_or_box + "
        "propagate_in_video over the frames init_state had loaded (init_state and model load not timed); both "
        f"models built after torch.manual_seed(0), in one process, alternating: 1 warm-up run each, then the median "
        f"of {repeats} runs (and the best run). Torch uses every CPU: another busy process on them slows a run "
        "several times over, so compare the load averages."
    )
    if gpu is None:
        print(
            "GPU row not measured: no CUDA device (torch.cuda.is_available() is false). It would time the same two "
            f"flows at {VIDEO_GPU_IMAGE_SIZE} px with random weights (no checkpoint can be downloaded here)."
        )
    elapsed = time.perf_counter() - started
    print(f"Load average (1/5/15 min) at the end: {_load()}. Video section: {elapsed:.0f} s.")
    print(flush=True)
    return {
        "settings": {"model": VIDEO_MODEL, "image_size": size, "frames": [short, long], "repeats": repeats},
        "box": box,
        "memory": {flow: {str(k): v for k, v in runs.items()} for flow, runs in memory_runs.items()},
        "memory_ratio": ratios,
        "memory_pass": ratios["samq"] <= FLAT_MEMORY_TARGET,
        "speed_cpu": cpu,
        "speed_gpu": gpu,
        "seconds": elapsed,
    }


def speed_rows(label: str, result: dict[str, Any], frames: int, repeats: int) -> None:
    """The speed table's rows for one device; records ``ratio`` and ``pass`` in ``result``."""
    fps = result["fps"]
    ratio = fps["samq"] / fps["meta"]
    note = f"median of {repeats} runs of {frames} frames, after 1 warm-up run"
    for flow, what in (
        ("samq", "samq streaming tracker (probe + decode + track + binarize)"),
        ("meta", "Meta's propagate_in_video over frames init_state loaded (raw loop)"),
    ):
        best = result["best_fps"][flow]
        print(f"| video speed, {label}: {what} | {fps[flow]:.2f} fps ({note}; best run {best:.2f} fps) | | |")
    ok = ratio >= VIDEO_SPEED_TARGET
    print(f"| video speed, {label}: samq / Meta | {ratio:.2f}× | ≥ {VIDEO_SPEED_TARGET}× | {verdict(ok)} |")
    result["ratio"] = ratio
    result["pass"] = ok


# ---- bulk section -------------------------------------------------------------------------------------------------


def bulk_template(model: str) -> dict[str, Any]:
    """The segment work of every image in the bulk section: one box prompt, the best mask only."""
    return {"type": "segment", "model": model, "prompts": [{"box": BULK_BOX}], "multimask_output": False}


def bulk_batch_job(model: str, uploads: list[str]) -> dict[str, Any]:
    return {"type": "batch", "template": bulk_template(model), "inputs": {"items": [{"upload": u} for u in uploads]}}


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
    seconds = _epoch(done["finished_at"]) - sent
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
    seconds = max(_epoch(j["finished_at"]) for j in jobs) - sent
    return BulkRun("separate", repeat, n, seconds, client_seconds, submitted - started, ids)


def upload_fresh(client: Client, seeds: range) -> list[str]:
    return [client.upload(synthetic_jpeg(seed), "image/jpeg")["id"] for seed in seeds]


def measure_bulk(args: argparse.Namespace, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    """A batch of N images against N separate segment jobs, images per second, on a stack of its own.

    Fairness: both measures run on the SAME worker process (``samq worker --queues bulk,interactive,io``,
    concurrency 1: batch shards arrive on ``bulk``, segment jobs on ``interactive``), same model, image size,
    prompt and output options. Embeddings are cached per image content (the worker's in-process LRU; the shared tier
    in object storage, keyed by the image's sha256), so every measure gets its own N never-seen images (new seeds,
    same size: same encoder work); separate jobs are checked to have encoded theirs (embedding ``miss``). Uploads
    happen before the clock starts. The order alternates per repeat (batch first, then separate first) so that a
    drift in the machine's load does not favour one; the figure is the median over ``--bulk-repeats``. The API's
    rate limits are lifted on this stack (``BULK_API_ENV``): the N submissions of B would otherwise meet 429s.
    """
    gpu = hw["cuda_device"] is not None
    size = DEFAULT_IMAGE_SIZE if gpu else args.image_size  # a GPU runs the full size
    device = "cuda" if gpu else "cpu"
    label = "GPU" if gpu else "CPU"
    n, repeats, model = args.bulk_n, args.bulk_repeats, args.model
    limits = QueueSettings()  # SAMQ_BATCH_* from this environment, which the worker inherits
    encode_size = limits.batch_encode_size or (8 if gpu else 1)  # the worker's default when unset
    warm_n = max(2, min(n, encode_size))
    print("## Bulk")
    print()
    print(
        f"- settings: {model} with RANDOM weights (SAMQ_RANDOM_WEIGHTS=1), input {size} px, device {device} "
        f"({hw['cuda_device'] or 'no CUDA device'}); one `samq worker --queues bulk,interactive,io` (prefork, "
        f"concurrency 1) runs both measures; shards of {limits.batch_shard_size} images "
        f"(SAMQ_BATCH_SHARD_SIZE), encoded {encode_size} at a time (SAMQ_BATCH_ENCODE_SIZE)"
    )
    print(
        f"- work: N={n} synthetic {IMAGE_W}×{IMAGE_H} JPEGs per measure, one box prompt {BULK_BOX}, "
        "multimask_output false; A = one batch job (submit → terminal), B = N segment jobs submitted at once, then "
        f"awaited (first submit → last terminal); every measure on N never-seen images (uploaded beforehand); "
        f"{repeats} repeat{'s' if repeats != 1 else ''}, alternating which goes first; medians"
    )
    print(f"- load average (1/5/15 min) at start: {_load()}")
    print(flush=True)
    worker_env = {"SAMQ_IMAGE_SIZE": str(size), "SAMQ_WORKER_DEVICE": device}
    runs: dict[str, list[BulkRun]] = {"batch": [], "separate": []}
    seed = BULK_SEED
    with (
        stack.running(interactive=False, extra_env=BULK_API_ENV),
        stack.worker("bulk", Queue.BULK, worker_env, also=(Queue.INTERACTIVE, Queue.IO)),
    ):
        client = Client(stack.api_url, timeout=60)
        # Warm-up, untimed: the model loads with the first job; then each path once (a batched encode of
        # SAMQ_BATCH_ENCODE_SIZE images; on a GPU also the kernels' autotuning for both batch sizes).
        t0 = time.perf_counter()
        warm = upload_fresh(client, range(seed, seed + 1 + 2 * warm_n))
        seed += len(warm)
        run_bulk_separate(client, model, warm[:1], repeat=-1)
        run_bulk_batch(client, model, warm[1 : 1 + warm_n], repeat=-1)
        run_bulk_separate(client, model, warm[1 + warm_n :], repeat=-1)
        print(
            f"bulk warm-up: model load, 1 + {warm_n} separate jobs, a batch of {warm_n}: {ms((time.perf_counter() - t0) * 1000)}",
            flush=True,
        )
        for repeat in range(repeats):
            images = {
                mode: upload_fresh(client, range(seed + i * n, seed + (i + 1) * n)) for i, mode in enumerate(runs)
            }
            seed += 2 * n
            order = ("batch", "separate") if repeat % 2 == 0 else ("separate", "batch")
            for mode in order:
                measure = run_bulk_batch if mode == "batch" else run_bulk_separate
                run = measure(client, model, images[mode], repeat)
                runs[mode].append(run)
                print(
                    f"bulk repeat {repeat + 1}/{repeats}, {mode}: {n} images in {run.seconds:.2f} s, "
                    f"{run.per_second:.2f} img/s (load {_load()})",
                    flush=True,
                )
    batch = statistics.median(r.per_second for r in runs["batch"])
    separate = statistics.median(r.per_second for r in runs["separate"])
    ratio = batch / separate
    ok = ratio >= BULK_TARGET
    row = (
        f"bulk{' GPU' if gpu else ''}  N={n}  batch {batch:.2f} img/s  separate {separate:.2f} img/s  "
        f"ratio {ratio:.2f}  target >= {BULK_TARGET:.1f}: {verdict(ok)}"
    )
    print()
    print("## Bulk results")
    print()
    print("| metric | value | target | pass/fail |")
    print("|---|---|---|---|")

    def listed(mode: str) -> str:
        return ", ".join(f"{r.per_second:.2f}" for r in runs[mode])

    print(
        f"| bulk, {label}, {size} px: one batch job of {n} images, images/s | {batch:.2f} (median of {repeats}: "
        f"{listed('batch')}) | | |"
    )
    print(
        f"| bulk, {label}, {size} px: {n} separate segment jobs at once, images/s | {separate:.2f} (median of "
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
        f"Load average (1/5/15 min) at the end: {_load()}."
    )
    print(flush=True)
    return {
        "settings": {
            "model": model,
            "image_size": size,
            "device": device,
            "cuda_device": hw["cuda_device"],
            "random_weights": True,
            "n": n,
            "repeats": repeats,
            "image": {"width": IMAGE_W, "height": IMAGE_H},
            "box": BULK_BOX,
            "shard_size": limits.batch_shard_size,
            "encode_size": encode_size,
        },
        "runs": {mode: [r.raw() for r in mode_runs] for mode, mode_runs in runs.items()},
        "batch_images_per_second": batch,
        "separate_images_per_second": separate,
        "ratio": ratio,
        "target": BULK_TARGET,
        "pass": ok,
        "row": row,
    }


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
