"""``python -m bench``: the flags, the sections they select, and the run (a temporary directory, stopped stacks)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import bench
from bench.bulk import BULK_N, BULK_REPEATS, BulkOptions, measure_bulk
from bench.concept import ConceptOptions, measure_concept
from bench.concept_memory import MEMORY_H, MEMORY_W, MemoryTest
from bench.everything import EverythingOptions, measure_everything
from bench.jobs import PHRASES
from bench.report import hardware, print_title
from bench.roboflow import RoboflowOptions, measure_roboflow
from bench.segment import SegmentOptions, measure_segment
from bench.stacks import DEFAULT_IMAGE_SIZE, log_tail, running_stack, start_worker
from bench.storage import STORAGE_IMAGE_SIZE, STORAGE_JOBS, STORAGE_RTTS_MS, StorageOptions, measure_storage
from bench.video import VideoOptions, measure_video
from bench.video_child import VideoRun, video_child
from tasks.batch_specs import MAX_BATCH_ITEMS_INLINE
from tasks.names import Queue

SECTIONS = ("segment", "concept", "video", "bulk", "roboflow", "storage", "everything")


@dataclass(frozen=True)
class Plan:
    """The sections to run (``None``: not selected) with their options, the JSON path and ``--keep``."""

    image_size: int
    segment: SegmentOptions | None
    concept: ConceptOptions | None
    video: VideoOptions | None
    bulk: BulkOptions | None
    roboflow: RoboflowOptions | None
    storage: StorageOptions | None
    everything: EverythingOptions | None
    json: Path | None
    keep: bool


def parser() -> argparse.ArgumentParser:
    description = bench.__doc__.split("\n\n")[0] if bench.__doc__ else None
    add = (parser := argparse.ArgumentParser(prog="python -m bench", description=description)).add_argument
    add("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="model input size (default 1024)")
    add("--model", default="sam2.1_hiera_tiny")
    add("--repeats", type=int, default=50, help="timed jobs and bare pings in (a) (default 50)")
    add("--json", type=Path, default=None, metavar="PATH", help="write the raw numbers here")
    add("--keep", action="store_true", help="keep the temporary directory (logs, objects)")
    add(
        "--only",
        choices=SECTIONS,
        default=None,
        help="run one section: segment ((a) and (b)), concept (SAM3), video (SAM2 tracking), bulk (batch vs jobs), "
        "roboflow (compat calls: overhead and 64 at once), storage (throughput with S3 behind a latency proxy) or "
        "everything (segment everything: time next to Meta's generator, memory on a 4000x3000 image)",
    )
    add("--concept-repeats", type=int, default=5, help="fresh images per phrase count in the concept timings")
    add(
        "--concept-phrases",
        default="1,3",
        metavar="N,M",
        help=f"phrase counts of the timed concept jobs (default 1,3; at most {len(PHRASES)})",
    )
    add(
        "--memory-image",
        default=f"{MEMORY_W}x{MEMORY_H}",
        metavar="WxH",
        help=f"synthetic image of the concept memory test (default {MEMORY_W}x{MEMORY_H})",
    )
    add("--memory-phrases", type=int, default=8, help="phrases of the memory test's jobs (default 8)")
    add("--no-memory", action="store_true", help="skip the concept memory test")
    add("--video-image-size", type=int, default=256, help="SAM2 input size on the CPU (default 256)")
    add("--video-short-frames", type=int, default=60, help="short video run, and speed (default 60)")
    add("--video-long-frames", type=int, default=600, help="long video run (default 600)")
    add("--video-repeats", type=int, default=5, help="timed runs per video flow (default 5)")
    add(
        "--bulk-n",
        type=int,
        default=BULK_N,
        help=f"images per bulk measure (default {BULK_N}; 2..{MAX_BATCH_ITEMS_INLINE})",
    )
    add("--bulk-repeats", type=int, default=BULK_REPEATS, help=f"runs of each bulk measure (default {BULK_REPEATS})")
    add("--roboflow-calls", type=int, default=64, help="compat calls at once in (c2) (default 64)")
    add("--roboflow-rounds", type=int, default=3, help="rounds of (c2) (default 3)")
    add(
        "--storage-image-size",
        type=int,
        default=STORAGE_IMAGE_SIZE,
        help=f"SAM2 input size in the storage section (default {STORAGE_IMAGE_SIZE})",
    )
    add(
        "--storage-jobs",
        type=int,
        default=STORAGE_JOBS,
        help=f"jobs (and batch items) per row (default {STORAGE_JOBS})",
    )
    add(
        "--storage-rtts",
        default=",".join(f"{r:g}" for r in STORAGE_RTTS_MS),
        metavar="MS,MS",
        help="storage round trips the proxies add, one row each (default 0,50,100)",
    )
    add(
        "--storage-handshake-rtts",
        type=int,
        default=1,
        help="round trips a new storage connection costs before its first request (default 1: TCP; TLS adds 1-2)",
    )
    add(
        "--everything-image-size", type=int, default=256, help="SAM2 input size in the everything section (default 256)"
    )
    add("--everything-repeats", type=int, default=3, help="timed jobs and direct calls per row (default 3)")
    add(
        "--everything-iou",
        type=float,
        default=0.537,
        help="pred_iou_thresh of the memory pair that reaches the upsampling (default 0.537; random weights predict "
        "IoUs of 0.47-0.54 at 256 px, a few percent of them above 0.537)",
    )
    add("--video-child", default=None, help=argparse.SUPPRESS)  # internal: one measured process
    return parser


def plan(args: argparse.Namespace, fail: Callable[[str], NoReturn]) -> Plan:
    """The validated flags; ``fail`` is ``parser.error`` (exits with the usage and a message)."""
    if min(args.repeats, args.concept_repeats, args.video_repeats, args.bulk_repeats, args.roboflow_rounds) < 1:
        fail("--repeats, --concept-repeats, --video-repeats, --bulk-repeats and --roboflow-rounds must be at least 1")
    if args.roboflow_calls < 1:
        fail("--roboflow-calls must be at least 1")
    if not 2 <= args.bulk_n <= MAX_BATCH_ITEMS_INLINE:
        fail(f"--bulk-n must be within 2..{MAX_BATCH_ITEMS_INLINE} (the items a batch request lists)")
    if min(args.video_short_frames, args.video_long_frames) < 2:
        fail("--video-short-frames and --video-long-frames must be at least 2")
    if args.video_image_size < 64 or args.video_image_size % 32:
        fail("--video-image-size must be a multiple of 32, at least 64")
    if (
        args.storage_jobs < 1
        or args.storage_handshake_rtts < 0
        or args.storage_image_size < 64
        or args.storage_image_size % 32
    ):
        fail(
            "--storage-jobs must be at least 1, --storage-handshake-rtts at least 0, --storage-image-size a multiple "
            "of 32, at least 64"
        )
    try:
        phrase_counts = [int(v) for v in args.concept_phrases.split(",")]
        memory_image = tuple(int(v) for v in args.memory_image.lower().split("x"))
        rtts = tuple(float(v) for v in args.storage_rtts.split(","))
    except ValueError:
        fail("--concept-phrases takes comma-separated counts, --memory-image WIDTHxHEIGHT, --storage-rtts MS,MS")
    if min(rtts) < 0:
        fail("--storage-rtts: round trips of 0 ms or more")
    if not all(1 <= n <= len(PHRASES) for n in phrase_counts):
        fail(f"--concept-phrases: each count within 1..{len(PHRASES)}")
    if len(memory_image) != 2 or min(memory_image) < 1:
        fail("--memory-image takes WIDTHxHEIGHT")
    if not 1 <= args.memory_phrases <= len(PHRASES):
        fail(f"--memory-phrases must be within 1..{len(PHRASES)}")
    chosen = [args.only] if args.only else list(SECTIONS)
    width, height = memory_image
    memory = None if args.no_memory else MemoryTest(width, height, list(PHRASES[: args.memory_phrases]))
    size = args.image_size
    return Plan(
        image_size=size,
        segment=SegmentOptions(args.model, size, args.repeats) if "segment" in chosen else None,
        concept=ConceptOptions(size, args.concept_repeats, phrase_counts, memory) if "concept" in chosen else None,
        video=VideoOptions(args.video_image_size, args.video_short_frames, args.video_long_frames, args.video_repeats)
        if "video" in chosen
        else None,
        bulk=BulkOptions(args.model, size, args.bulk_n, args.bulk_repeats) if "bulk" in chosen else None,
        roboflow=RoboflowOptions(args.model, args.repeats, args.roboflow_calls, args.roboflow_rounds)
        if "roboflow" in chosen
        else None,
        storage=StorageOptions(
            args.model, args.storage_image_size, args.storage_jobs, rtts, args.storage_handshake_rtts
        )
        if "storage" in chosen
        else None,
        everything=EverythingOptions(args.everything_image_size, args.everything_repeats, args.everything_iou)
        if "everything" in chosen
        else None,
        json=args.json,
        keep=args.keep,
    )


def run(plan: Plan, workdir: Path) -> None:
    """The selected sections in order; the segment, concept and roboflow sections share one stack, which lives to
    the end."""
    with ExitStack() as running:
        stack = None
        if plan.segment is not None or plan.concept is not None or plan.roboflow is not None:
            # The Roboflow section's many clients share one tenant: its rate limit must not be what is measured.
            unlimited = {"SAMQ_API_RATE_PER_SECOND": "100000", "SAMQ_API_RATE_BURST": "100000"}
            stack = running.enter_context(running_stack(workdir, plan.image_size, unlimited))
            if plan.segment is not None or plan.roboflow is not None:
                start_worker(stack, [Queue.INTERACTIVE])
        hw = hardware()
        raw: dict[str, Any] = {}
        if plan.segment is not None and stack is not None:
            raw.update(measure_segment(plan.segment, stack, hw))
        else:
            print_title(hw)
            raw["hardware"] = hw
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if plan.concept is not None and stack is not None:
            steps.append(("concept", partial(measure_concept, plan.concept, stack, hw)))
        if plan.roboflow is not None and stack is not None:
            steps.append(("roboflow", partial(measure_roboflow, plan.roboflow, stack, hw)))
        on_their_own: list[tuple[str, Any, Callable[..., dict[str, Any]]]] = [  # sections with stacks of their own
            ("video", plan.video, measure_video),
            ("bulk", plan.bulk, measure_bulk),
            ("storage", plan.storage, measure_storage),
            ("everything", plan.everything, measure_everything),
        ]
        for name, options, measure_section in on_their_own:
            if options is not None:
                steps.append((name, partial(measure_section, options, workdir / name, hw)))
        for index, (name, measure) in enumerate(steps):
            if index or plan.segment is not None:
                print()
            raw[name] = measure()
        if plan.json is not None:
            plan.json.write_text(json.dumps(raw, indent=2))
            print(f"raw numbers: {plan.json}")


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.video_child is not None:
        print(json.dumps(video_child(VideoRun(**json.loads(args.video_child)))))
        return 0
    chosen = plan(args, arguments.error)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="samq-bench-"))
    try:
        run(chosen, workdir)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; the stack was stopped", file=sys.stderr)
        return 130
    except Exception as e:
        print(f"bench: {type(e).__name__}: {e}", file=sys.stderr)
        print(log_tail(workdir / "logs"), file=sys.stderr)
        for section in ("bulk", "storage", "everything"):
            if getattr(chosen, section) is not None:
                print(log_tail(workdir / section / "logs"), file=sys.stderr)
        return 1
    finally:
        if chosen.keep:
            print(f"(kept {workdir})", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
