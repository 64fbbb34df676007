"""The SAM2 video section: flat memory and speed of samq's streaming tracker against Meta's ``SAM2VideoPredictor``.

No stack: each measurement is a fresh ``python -m bench --video-child`` process (:mod:`bench.video_child`) with
``TORCH_COMPILE_DISABLE=1 TQDM_DISABLE=1``, on a synthetic 160×120 mp4 of one moving ellipse
(``tests/support/videos.py``), hiera_tiny with random weights, one object seeded with a box on frame 0.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
from PIL import Image

from bench.jobs import BenchError
from bench.memory import RSS_SAMPLE_SECONDS, RssSampler
from bench.report import gb, load_average, print_table_head, verdict
from bench.stacks import REPO
from bench.video_child import VIDEO_MODEL, VideoRun

VIDEO_W, VIDEO_H, VIDEO_FPS = 160, 120, 30
VIDEO_GPU_IMAGE_SIZE = 1024
FLAT_MEMORY_TARGET = 1.10  # long / short peak RSS: "within 10%"
VIDEO_SPEED_TARGET = 0.9  # samq fps / Meta's raw loop fps
CHILD_ENV = {"TORCH_COMPILE_DISABLE": "1", "TQDM_DISABLE": "1"}  # sam2 draws tqdm bars; no compile on the clock
FLOWS = (("samq", "samq streaming tracker"), ("meta", "Meta's SAM2VideoPredictor (reference)"))


@dataclass(frozen=True)
class VideoOptions:
    image_size: int
    short_frames: int
    long_frames: int
    repeats: int


@dataclass(frozen=True)
class Inputs:
    """The clip, the ellipse's box on frame 0, and per length a JPEG folder of the clip's first frames."""

    clip: Path
    box: list[float]
    folders: dict[int, Path]
    log: Path


def measure_video(options: VideoOptions, folder: Path, hw: dict[str, Any]) -> dict[str, Any]:
    """Memory runs (one process per flow and length), then the speed runs; prints the table, returns the numbers."""
    started = time.perf_counter()
    short, long = options.short_frames, options.long_frames
    inputs = write_video_inputs(folder, [short, long])
    print_header(options, inputs.box)
    memory_runs = {
        flow: {frames: memory_run(inputs, flow, frames, options.image_size) for frames in (short, long)}
        for flow, _ in FLOWS
    }
    cpu = speed_run(inputs, options, "cpu", options.image_size)
    gpu = speed_run(inputs, options, "cuda", VIDEO_GPU_IMAGE_SIZE) if hw["cuda_device"] else None
    print()
    print_table_head("Video results")
    ratios = print_memory_rows(memory_runs, short, long)
    speed_rows(f"CPU, {options.image_size} px", cpu, short, options.repeats)
    if gpu is not None:
        label = f"GPU ({hw['cuda_device']}), {VIDEO_GPU_IMAGE_SIZE} px, random weights"
        speed_rows(label, gpu, short, options.repeats)
    else:
        print(f"| video speed, GPU, {VIDEO_GPU_IMAGE_SIZE} px: samq / Meta | not measured (see below) | ≥ 0.9× | n/a |")
    print()
    print_notes(short, options.repeats, measured_gpu=gpu is not None)
    elapsed = time.perf_counter() - started
    print(f"Load average (1/5/15 min) at the end: {load_average()}. Video section: {elapsed:.0f} s.")
    print(flush=True)
    return {
        "settings": {
            "model": VIDEO_MODEL,
            "image_size": options.image_size,
            "frames": [short, long],
            "repeats": options.repeats,
        },
        "box": inputs.box,
        "memory": {flow: {str(k): v for k, v in runs.items()} for flow, runs in memory_runs.items()},
        "memory_ratio": ratios,
        "memory_pass": ratios["samq"] <= FLAT_MEMORY_TARGET,
        "speed_cpu": cpu,
        "speed_gpu": gpu,
        "seconds": elapsed,
    }


def write_video_inputs(folder: Path, frames: list[int]) -> Inputs:
    """The synthetic mp4 (one ellipse drifting right and down, ``max(frames)`` frames), the ellipse's box on frame 0,
    and per length a JPEG folder of the mp4's first frames as decoded (what Meta's ``init_state`` reads)."""
    from tests.support.videos import Shape, moving_shapes, write_clip  # PyAV: not in the measured children
    from worker.video import VideoFrames
    from worker.video_probe import probe, select_frames

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
    return Inputs(clip, box, folders, folder / "children.log")


def run_video_child(run: VideoRun, log: Path) -> dict[str, Any]:
    """Run ``run`` in a fresh process; its result plus ``peak_bytes``: the larger of its VmHWM (whole lifetime) and
    its RSS sampled from here every few ms."""
    command = [sys.executable, "-m", "bench", "--video-child", json.dumps(asdict(run))]
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


def memory_run(inputs: Inputs, flow: str, frames: int, image_size: int) -> dict[str, Any]:
    """One process tracking ``frames`` frames with one flow, once: its peak RSS."""
    run = VideoRun([flow], frames, str(inputs.clip), str(inputs.folders[frames]), inputs.box, image_size)
    result = run_video_child(run, inputs.log)
    seconds = result["seconds"][flow][0]
    print(
        f"video memory, {flow}, {frames} frames: peak {gb(result['peak_bytes'])} ({seconds:.0f} s; "
        f"load {load_average()})",
        flush=True,
    )
    return result


def speed_run(inputs: Inputs, options: VideoOptions, device: str, image_size: int) -> dict[str, Any]:
    """Both flows in one process over the short clip, alternating: one warm-up run each, then ``repeats``."""
    short = options.short_frames
    run = VideoRun(
        ["samq", "meta"],
        short,
        str(inputs.clip),
        str(inputs.folders[short]),
        inputs.box,
        image_size,
        device,
        options.repeats,
        1,
    )
    result = run_video_child(run, inputs.log)
    result["fps"] = {flow: short / statistics.median(s) for flow, s in result["seconds"].items()}
    result["best_fps"] = {flow: short / min(s) for flow, s in result["seconds"].items()}
    fps = ", ".join(f"{flow} {value:.2f} fps" for flow, value in result["fps"].items())
    print(f"video speed, {device}, {image_size} px: {fps} (load {load_average()})", flush=True)
    return result


def print_header(options: VideoOptions, box: list[float]) -> None:
    print("## SAM2 video")
    print()
    print(
        f"- settings: {VIDEO_MODEL} with RANDOM weights (seed 0), input {options.image_size} px, device cpu, one "
        f"object seeded with a box {box} on frame 0; synthetic {VIDEO_W}×{VIDEO_H} H.264 mp4 at {VIDEO_FPS} fps (one "
        "drifting ellipse); every measurement in a fresh `python -m bench --video-child` process "
        "(TORCH_COMPILE_DISABLE=1, TQDM_DISABLE=1)"
    )
    print(f"- load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def print_memory_rows(memory_runs: dict[str, dict[int, dict[str, Any]]], short: int, long: int) -> dict[str, float]:
    """The flat-memory rows; the long / short peak ratio per flow."""
    ratios: dict[str, float] = {}
    for flow, label in FLOWS:
        runs = memory_runs[flow]
        for frames in (short, long):
            print(f"| video memory, {label}, {frames} frames: peak RSS | {gb(runs[frames]['peak_bytes'])} | | |")
        ratios[flow] = runs[long]["peak_bytes"] / runs[short]["peak_bytes"]
        target = f"≤ {FLAT_MEMORY_TARGET:.2f}" if flow == "samq" else "none (contrast)"
        outcome = verdict(ratios[flow] <= FLAT_MEMORY_TARGET) if flow == "samq" else "n/a"
        print(f"| video memory, {label}: {long} / {short} frames | {ratios[flow]:.3f} | {target} | {outcome} |")
    return ratios


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


def print_notes(short: int, repeats: int, measured_gpu: bool) -> None:
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
    if not measured_gpu:
        print(
            "GPU row not measured: no CUDA device (torch.cuda.is_available() is false). It would time the same two "
            f"flows at {VIDEO_GPU_IMAGE_SIZE} px with random weights (no checkpoint can be downloaded here)."
        )
