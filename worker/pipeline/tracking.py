"""The ``track`` pipeline: one attempt of a video job, from the record to the stored tracks.

Fetch the video to a temporary file, probe it (limits, frame times), choose the processed frames, then stream them
through the tracker one at a time: every frame is checked for cancellation, recorded, and every chunk is flushed to
storage together with the tracker's state, so a later attempt resumes after the last chunk instead of frame 0.

Re-seeding (``every_n_frames`` / ``every_frame``): on a re-seed frame the tracker first tracks the frame, then each
detection is matched to the track it overlaps most (best pairs first, IoU ≥ :data:`MATCH_IOU`) and re-seeds it,
keeping its id; a detection that matches nothing starts a new id. A track's overlap with a detection is the larger
IoU of the detection with the box of the track's mask on this frame and with the box that last seeded the track
(the previous detection): the mask follows fast motion, the previous detection bridges frames where the mask is
poor or briefly lost. The detection's label and score stay with the track.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field, ValidationError

from tasks.errors import (
    InvalidDetectionsError,
    PromptOutOfBoundsError,
    SeedFrameOutOfRangeError,
    TooManyObjectsError,
)
from tasks.jobs import Job, JobResult
from tasks.specs import Box, Spec, first_problem
from tasks.track_specs import TrackObject, TrackSpec
from worker.encoders import decode_rle
from worker.pipeline.context import PROGRESS_SECONDS, Checkpoint, Runtime, TrackLimits
from worker.pipeline.lease import JobCanceledError
from worker.pipeline.track_results import TrackedObject, TrackResults
from worker.preview import PreviewWriter
from worker.results import boxes_from_masks
from worker.runners.video import FrameTracks, Seed, VideoSession, VideoTracker
from worker.video import VideoFrames
from worker.video_probe import VideoInfo, probe, select_frames

log = logging.getLogger(__name__)

MATCH_IOU = 0.3
"""A detection re-seeds the live track whose box it overlaps by at least this IoU (else it starts a new track)."""
MAX_DETECTIONS_PER_FRAME = 1000


class DetectionBox(Box):
    label: str | None = Field(default=None, max_length=200)
    score: float | None = Field(default=None, ge=0, le=1)


class DetectionLine(Spec):
    frame: int = Field(ge=0)
    boxes: list[DetectionBox] = Field(default_factory=list, max_length=MAX_DETECTIONS_PER_FRAME)


Progress = Callable[[int, int], None]
"""``(done, total)`` processed frames."""


@dataclass
class TrackContext:
    """What ``run_track`` needs from the worker runtime."""

    tracker: VideoTracker
    fetch: Callable[[Any], bytes]
    """A media reference of the job → its bytes (size- and time-limited)."""
    results: Callable[[Callable[[int], tuple[int, float]], bool], TrackResults]
    """``(clock, polygons)`` → the job's :class:`TrackResults` (resumed from storage when it has a manifest)."""
    progress: Progress
    limits: TrackLimits


def track_context(job: Job, spec: TrackSpec, rt: Runtime) -> TrackContext:
    """The context of ``job`` in this worker process: its tracker, its media, its results and progress."""
    limits = rt.track

    def results(clock: Callable[[int], tuple[int, float]], polygons: bool) -> TrackResults:
        return TrackResults(
            rt.objects,
            job,
            clock,
            polygons=polygons,
            chunk_frames=limits.chunk_frames,
            chunk_seconds=limits.chunk_seconds,
        )

    def progress(done: int, total: int) -> None:
        rt.store.set_progress(job.id, job.attempts, done, total, "frames")

    return TrackContext(
        tracker=rt.models.get_video(spec.model.value),
        fetch=lambda ref: rt.media.fetch(ref, job.tenant),
        results=results,
        progress=progress,
        limits=limits,
    )


def run_track(job: Job, spec: TrackSpec, ctx: TrackContext, checkpoint: Checkpoint) -> JobResult:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="samq-video-") as tmp:
        path = Path(tmp) / "video"
        path.write_bytes(ctx.fetch(spec.video))
        limits = ctx.limits
        info = probe(path, max_seconds=limits.max_seconds, max_pixels=limits.max_pixels, max_frames=limits.max_frames)
        window = spec.frames
        selected = select_frames(info, start=window.start, end=window.end, stride=window.stride, max_fps=spec.max_fps)
        seeds = _seeds(spec.objects, selected, info)
        detections = _detections(ctx.fetch(spec.detections), selected, info) if spec.detections is not None else {}
        with VideoFrames(path, info, selected) as frames:
            results = ctx.results(lambda i: (frames.frame_number(i), frames.time(i)), "polygon" in spec.output.formats)
            resumed_from = results.done
            reseeding = spec.prompt_mode != "first_frame"
            state = results.state()
            concepts = bool(spec.concepts)  # a concept session finds its objects itself
            if state is None:
                session = ctx.tracker.open(frames, spec.concepts, reseeding=reseeding)
                for obj in spec.objects:
                    box = None if obj.box is None else [obj.box.x0, obj.box.y0, obj.box.x1, obj.box.y1]
                    results.objects.setdefault(obj.id, TrackedObject(label=obj.label, seed_box=box))
                for index, at_index in sorted(seeds.items()):
                    session.add(index, at_index)
            else:
                session = ctx.tracker.resume(frames, state, reseeding=reseeding)
            every = 1 if spec.prompt_mode == "every_frame" else spec.every_n
            reseed_at = {i: boxes for i, boxes in detections.items() if i % every == 0}
            tracked = _track(session, results.done, len(frames), reseed_at, results, limits.max_objects, concepts)
            canceled = _record(tracked, results, session, checkpoint, ctx.progress, len(frames))
            if canceled:  # with its state: an attempt that dies while finishing leaves a resumable manifest
                results.flush(session.snapshot())
            preview = _preview(path, selected, info) if spec.output.preview and not canceled else None
            summary = {
                "video": {
                    "width": info.width,
                    "height": info.height,
                    "fps": round(info.fps, 6),
                    "frames": len(info.times),
                    "duration": round(info.duration, 6),
                },
                "frames": results.done,
                "objects_tracked": len(results.objects),
                "partial": canceled,
                "resumed_from": resumed_from or None,
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            result = results.finish(summary, preview)
    if canceled:
        raise JobCanceledError(job.id, partial=result)
    return result


def _record(
    tracked: Iterator[FrameTracks],
    results: TrackResults,
    session: VideoSession,
    checkpoint: Checkpoint,
    progress: Progress,
    total: int,
) -> bool:
    """Record every tracked frame, flushing chunks with the tracker's state; ``True`` if the job was canceled."""
    reported = 0.0
    for tracks in tracked:
        try:
            checkpoint()
        except JobCanceledError:
            return True
        results.add(tracks)
        if results.due():
            results.flush(session.snapshot())
        if time.monotonic() - reported >= PROGRESS_SECONDS:
            progress(results.done, total)
            reported = time.monotonic()
    return False


def _track(
    session: VideoSession,
    start: int,
    total: int,
    reseed_at: dict[int, list[DetectionBox]],
    results: TrackResults,
    max_objects: int,
    concepts: bool,
) -> Iterator[FrameTracks]:
    """Frames ``start`` … ``total - 1``, re-seeding from the detections on the frames of ``reseed_at``."""
    index = start
    for reseed in sorted(i for i in reseed_at if i >= start):
        yield from _span(session, index, reseed - 1, bool(results.objects))
        current = next(_span(session, reseed, reseed, bool(results.objects)))
        seeds = _match(current, reseed_at[reseed], results, max_objects)
        yield session.add(reseed, seeds) if seeds else current
        index = reseed + 1
    yield from _span(session, index, total - 1, concepts or bool(results.objects))


def _span(session: VideoSession, first: int, last: int, tracking: bool) -> Iterator[FrameTracks]:
    """Frames ``first`` … ``last`` tracked (or empty while there is nothing to track yet)."""
    if first > last:
        return
    if tracking:
        yield from session.propagate(first, last)
    else:
        yield from (_nothing(i) for i in range(first, last + 1))


def _match(current: FrameTracks, boxes: list[DetectionBox], results: TrackResults, max_objects: int) -> list[Seed]:
    """A seed per detection: the track it overlaps most (greedy, best IoU first), or a new id."""
    detection_boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=np.float32).reshape(-1, 4)
    ids = list(current.obj_ids)
    mask_boxes = boxes_from_masks(current.masks)
    seeded = np.array([results.objects[i].seed_box or [0.0] * 4 for i in ids], dtype=np.float32).reshape(-1, 4)
    iou = np.maximum(_iou(detection_boxes, mask_boxes), _iou(detection_boxes, seeded))
    assigned: dict[int, int] = {}
    for d, t in sorted(np.ndindex(iou.shape), key=lambda pair: -iou[pair]):
        if iou[d, t] < MATCH_IOU:
            break
        if d not in assigned and ids[t] not in assigned.values():
            assigned[d] = ids[t]
    seeds = []
    next_id = max(results.objects, default=-1) + 1
    for d, box in enumerate(boxes):
        obj_id = assigned.get(d)
        if obj_id is None:
            if len(results.objects) >= max_objects:
                raise TooManyObjectsError(
                    f"re-seeding would track more than {max_objects} objects (SAMQ_WORKER_MAX_TRACK_OBJECTS)"
                )
            obj_id, next_id = next_id, next_id + 1
            results.objects[obj_id] = TrackedObject(label=box.label)
        known = results.objects[obj_id]
        known.label = box.label if box.label is not None else known.label
        known.detection_score = box.score
        known.seed_box = detection_boxes[d].tolist()
        seeds.append(Seed(obj_id=obj_id, box=detection_boxes[d]))
    return seeds


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(len(a), len(b)) IoU of XYXY boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0).astype(np.float32)


def _nothing(index: int) -> FrameTracks:
    return FrameTracks(index=index, obj_ids=[], masks=np.zeros((0, 1, 1), bool), scores=np.zeros(0, np.float32))


def _seeds(objects: Sequence[TrackObject], selected: npt.NDArray[np.int64], info: VideoInfo) -> dict[int, list[Seed]]:
    """Processed index → the seeds on it. Raises for a seed frame that is not processed or a prompt off the frame."""
    position = {int(frame): i for i, frame in enumerate(selected)} if len(selected) else {}
    seeds: dict[int, list[Seed]] = {}
    for n, obj in enumerate(objects):
        index = position.get(obj.frame)
        if index is None:
            last = len(info.times) - 1
            where = f"past the video's last frame ({last})" if obj.frame > last else "not among the processed frames"
            raise SeedFrameOutOfRangeError(f"objects[{n}].frame {obj.frame} is {where}")
        box = None
        if obj.box is not None:
            box = _in_frame(f"objects[{n}].box", [obj.box.x0, obj.box.y0, obj.box.x1, obj.box.y1], info)
        coords = labels = None
        if obj.points:
            coords = np.array([[p.x, p.y] for p in obj.points], dtype=np.float32)
            if (coords[:, 0] > info.width).any() or (coords[:, 1] > info.height).any():
                raise PromptOutOfBoundsError(f"objects[{n}].points lie outside the {info.width}x{info.height} frame")
            labels = np.array([int(p.positive) for p in obj.points], dtype=np.int32)
        seeds.setdefault(index, []).append(Seed(obj_id=obj.id, box=box, point_coords=coords, point_labels=labels))
    return seeds


def _in_frame(where: str, box: list[float], info: VideoInfo) -> npt.NDArray[np.float32]:
    x0, y0, x1, y1 = box
    if x0 >= info.width or y0 >= info.height or x1 > info.width + 1 or y1 > info.height + 1:
        raise PromptOutOfBoundsError(
            f"{where} ({x0}, {y0}, {x1}, {y1}) lies outside the {info.width}x{info.height} frame"
        )
    return np.array([x0, y0, min(x1, info.width), min(y1, info.height)], dtype=np.float32)


def _detections(data: bytes, selected: npt.NDArray[np.int64], info: VideoInfo) -> dict[int, list[DetectionBox]]:
    """Processed index → its detections, from the JSONL file (lines for frames not processed are ignored)."""
    position = {int(frame): i for i, frame in enumerate(selected)}
    found: dict[int, list[DetectionBox]] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = DetectionLine.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as e:
            problem = first_problem(e) if isinstance(e, ValidationError) else str(e)
            raise InvalidDetectionsError(f"detections line {number}: {problem}") from e
        for b, box in enumerate(line.boxes):
            try:
                _in_frame(f"detections line {number} box {b}", [box.x0, box.y0, box.x1, box.y1], info)
            except PromptOutOfBoundsError as e:
                raise InvalidDetectionsError(e.message) from e
        index = position.get(line.frame)
        if index is not None:
            found.setdefault(index, []).extend(line.boxes)
    return found


def _preview(video: Path, selected: npt.NDArray[np.int64], info: VideoInfo) -> Callable[[Path, Iterator[bytes]], None]:
    """Renders ``preview.mp4`` from the processed frames and the finished ``tracks.jsonl`` lines."""
    span = float(info.times[selected[-1]] - info.times[selected[0]])
    fps = (len(selected) - 1) / span if span > 0 else info.fps

    def render(out: Path, lines: Iterator[bytes]) -> None:
        with VideoFrames(video, info, selected) as frames, PreviewWriter(out, info.width, info.height, fps) as writer:
            for i, raw in enumerate(lines):
                line = json.loads(raw)
                writer.write(frames[i], [(o["id"], decode_rle(o["mask"])) for o in line["objects"]])

    return render
