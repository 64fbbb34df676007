"""A track job's results, streamed to storage while it runs, and what lets a later attempt resume it.

Layout under ``jobs/{job_id}/``:

- ``parts/{first:08d}-{last:08d}.jsonl``: the lines of processed frames ``first`` … ``last``, one chunk per flush;
- ``parts/state-{last:08d}.pt``: the tracker's state after frame ``last`` (only the newest is kept);
- ``parts/manifest.json``: the chunks flushed so far, the newest state, and the objects seen. It is written last,
  so it only ever names complete files: a worker that dies loses at most the chunk it was filling, and the next
  attempt continues after the manifest's last chunk, with the tracker restored exactly where it was.
- ``tracks.jsonl`` (the chunks joined, in order: every processed frame exactly once), ``summary.json``, and on
  request ``preview.mp4``, written when the job ends; the ``parts/`` are then deleted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from storage.base import ObjectNotFoundError
from tasks.jobs import Job, JobResult
from worker.encoders import encode_polygons, encode_rle
from worker.pipeline.objects import JobObjects
from worker.results import boxes_from_masks
from worker.runners.video import FrameTracks

PARTS = "parts/"
MANIFEST = f"{PARTS}manifest.json"
TRACKS = "tracks.jsonl"
SUMMARY = "summary.json"
PREVIEW = "preview.mp4"


class TrackedObject(BaseModel):
    """What the job knows about one object id: its label, the score of the detection that last seeded it, and
    where it was visible."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = None
    detection_score: float | None = None
    first_frame: int | None = None
    last_frame: int | None = None
    frames_visible: int = 0
    seed_box: list[float] | None = None
    """The box that last seeded it (x0, y0, x1, y1): with its mask's box, what a re-seeding detection is matched to."""


class Chunk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    first: int
    last: int
    bytes: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunks: list[Chunk] = []
    state: str | None = None
    objects: dict[int, TrackedObject] = {}

    @property
    def next_index(self) -> int:
        """The first processed frame no chunk holds."""
        return self.chunks[-1].last + 1 if self.chunks else 0


FrameClock = Callable[[int], tuple[int, float]]
"""Processed index → (the video's frame number, its time in seconds)."""


class TrackResults:
    """Accumulates frame lines, flushes them as chunks (with the tracker state), and assembles the final files."""

    def __init__(
        self,
        objects: JobObjects,
        job: Job,
        clock: FrameClock,
        *,
        polygons: bool,
        chunk_frames: int,
        chunk_seconds: float,
    ) -> None:
        self._objects = objects
        self._job = job
        self._clock = clock
        self._polygons = polygons
        self._chunk_frames = chunk_frames
        self._chunk_seconds = chunk_seconds
        self.manifest = self._read_manifest()
        self._lines: list[bytes] = []
        self._first = self.manifest.next_index
        self._opened = time.monotonic()

    @property
    def objects(self) -> dict[int, TrackedObject]:
        return self.manifest.objects

    @property
    def done(self) -> int:
        """Processed frames recorded (flushed or pending)."""
        return self._first + len(self._lines)

    def state(self) -> bytes | None:
        """The tracker state saved with the last chunk (``None`` on a fresh job)."""
        if self.manifest.state is None:
            return None
        return self._read(self.manifest.state)

    def add(self, tracks: FrameTracks) -> None:
        """Record one processed frame (the next one: frames come in order). Absent objects are left out."""
        if tracks.index != self.done:
            raise ValueError(f"frame {tracks.index} recorded out of order (expected {self.done})")
        frame, seconds = self._clock(tracks.index)
        boxes = boxes_from_masks(tracks.masks)
        found = []
        for i, obj_id in enumerate(tracks.obj_ids):
            mask = tracks.masks[i]
            if not mask.any():
                continue
            known = self.objects.setdefault(obj_id, TrackedObject())
            if tracks.labels and known.label is None:
                known.label = tracks.labels[i]
            known.first_frame = frame if known.first_frame is None else known.first_frame
            known.last_frame = frame
            known.frames_visible += 1
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            entry: dict[str, Any] = {
                "id": obj_id,
                "label": known.label,
                "score": round(float(tracks.scores[i]), 6),
                "bbox": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
                "area": int(np.count_nonzero(mask)),
                "mask": encode_rle(mask),
            }
            if known.detection_score is not None:
                entry["detection_score"] = known.detection_score
            if self._polygons:
                entry["polygon"] = encode_polygons(mask)
            found.append(entry)
        line = {"frame": frame, "time": round(seconds, 6), "objects": found}
        self._lines.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")

    def due(self) -> bool:
        """Whether the pending lines make a chunk (by frame count or by age)."""
        return len(self._lines) >= self._chunk_frames or (
            bool(self._lines) and time.monotonic() - self._opened >= self._chunk_seconds
        )

    def flush(self, state: bytes | None) -> None:
        """Store the pending lines as a chunk, then ``state`` (the tracker after the chunk's last frame), then the
        manifest naming both; the previous state is deleted last. ``state`` ``None`` (a canceled job) keeps none."""
        self._opened = time.monotonic()
        if not self._lines:
            return
        first, last = self._first, self._first + len(self._lines) - 1
        name = f"{PARTS}{first:08d}-{last:08d}.jsonl"
        data = b"".join(self._lines)
        self._put(name, data, "application/jsonl")
        previous = self.manifest.state
        state_name = None
        if state is not None:
            state_name = f"{PARTS}state-{last:08d}.pt"
            self._put(state_name, state, "application/octet-stream")
        self.manifest.chunks.append(Chunk(name=name, first=first, last=last, bytes=len(data)))
        self.manifest.state = state_name
        self._put(MANIFEST, self.manifest.model_dump_json().encode(), "application/json")
        if previous is not None and previous != state_name:
            self._delete(previous)
        self._lines, self._first = [], last + 1

    def finish(self, summary: dict[str, Any], preview: Callable[[Path, Iterator[bytes]], None] | None) -> JobResult:
        """Join the chunks into ``tracks.jsonl``, write ``summary.json`` (and ``preview.mp4``), drop ``parts/``."""
        self.flush(None)
        files = []
        with tempfile.TemporaryDirectory(prefix="samq-track-") as tmp:
            joined = Path(tmp) / TRACKS
            with joined.open("wb") as out:
                for chunk in self.manifest.chunks:
                    out.write(self._read(chunk.name))
            files.append(self._objects.write_file(self._job, TRACKS, joined, "application/jsonl"))
            if preview is not None:
                rendered = Path(tmp) / PREVIEW
                preview(rendered, _lines(joined))
                files.append(self._objects.write_file(self._job, PREVIEW, rendered, "video/mp4"))
        summary["objects"] = [
            {"id": obj_id, **known.model_dump(exclude={"seed_box"})} for obj_id, known in sorted(self.objects.items())
        ]
        document = json.dumps(summary, separators=(",", ":")).encode()
        files.append(self._objects.write(self._job, SUMMARY, document, "application/json"))
        self._objects.discard(self._job, PARTS)  # the result is complete without them
        return JobResult(
            files=files,
            summary={k: summary[k] for k in ("frames", "objects_tracked", "partial")},
            document=SUMMARY,
        )

    def _read_manifest(self) -> Manifest:
        try:
            return Manifest.model_validate_json(self._read(MANIFEST))
        except ObjectNotFoundError:
            return Manifest()

    def _read(self, name: str) -> bytes:
        return self._objects.read(self._job, name)

    def _put(self, name: str, data: bytes, content_type: str) -> None:
        self._objects.write(self._job, name, data, content_type)

    def _delete(self, name: str) -> None:
        self._objects.discard(self._job, name)  # an old state file left behind is harmless: no manifest names it


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f
