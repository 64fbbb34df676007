"""One measured process of the video section (``python -m bench --video-child '<VideoRun as JSON>'``).

Models and video code are imported by the flow that needs them: the process's peak RSS is the measurement, so it
holds only what that flow holds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.jobs import BenchError
from bench.memory import proc_status_bytes
from worker.settings import WorkerSettings

VIDEO_MODEL = "sam2.1_hiera_tiny"


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
    """Per flow, the seconds of each timed run; the process's own peak RSS (VmHWM)."""
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
    from worker.video import VideoFrames
    from worker.video_probe import probe, select_frames

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

    from worker.runners.sam2_build import has_connected_components
    from worker.weights import model_card

    torch.manual_seed(settings.seed)  # what sam2_build does for the runner: the same random weights
    predictor = build_sam2_video_predictor(
        model_card(VIDEO_MODEL).config,
        None,
        device=run.device,
        hydra_overrides_extra=[f"++model.image_size={run.image_size}"],
    )
    if not has_connected_components():
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
