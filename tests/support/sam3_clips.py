"""Inputs and checks shared by the SAM3 video runner tests: a synthetic clip, frames that log their reads, the seeds
and their reference prompts, and exact comparisons of tracks."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.runners.sam3_tracker_video import Sam3TrackerVideoSession
from worker.runners.video import FrameTracks, Seed
from worker.settings import WorkerSettings

SIZE = 112  # an 8x8 patch grid, 32x32 low-res masks
LENGTH = 24
HEIGHT, WIDTH = 72, 96
BOX = np.array([5.0, 10.0, 25.0, 30.0], np.float32)
POINT = np.array([[70.0, 50.0]], np.float32)
LATER = 7  # the frame the second object is seeded on
PHRASES = ["person", "car"]


def clip_settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "random_weights": True,
        "device": "cpu",
        "seed": 0,
        "allow_download": False,
        "image_size": SIZE,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def clip(length: int = LENGTH) -> list[np.ndarray]:
    """Two rectangles moving over a dark background: a red one down-right, a green one left."""
    frames = []
    for i in range(length):
        frame = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
        frame[10 + i : 30 + i, 5 + 2 * i : 25 + 2 * i] = (220, 40, 40)
        frame[40:60, 60 - i : 80 - i] = (40, 200, 60)
        frames.append(frame)
    return frames


class LoggedFrames:
    """A :class:`~worker.runners.video.Frames` over a list, recording which frames were read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self._frames = frames
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        self.reads.append(index)
        return self._frames[index]


def seed_two(session: Sam3TrackerVideoSession) -> list[FrameTracks]:
    """Object 1 boxed on frame 0, object 2 clicked on frame :data:`LATER` (before any propagation)."""
    return [
        session.add(0, [Seed(1, box=BOX)]),
        session.add(LATER, [Seed(2, point_coords=POINT, point_labels=np.array([1], np.int32))]),
    ]


REFERENCE_PROMPTS: list[tuple[int, int | list[int], dict[str, Any]]] = [
    (0, 1, {"input_boxes": [[BOX.tolist()]]}),
    (LATER, 2, {"input_points": [[POINT.tolist()]], "input_labels": [[[1]]]}),
]


def assert_equals_reference(
    tracks: list[FrameTracks], reference: list[tuple[list[int], np.ndarray, np.ndarray]]
) -> None:
    assert len(tracks) == len(reference)
    for got, (ids, masks, scores) in zip(tracks, reference, strict=True):
        assert got.obj_ids == ids
        assert np.array_equal(got.masks, masks)
        assert np.array_equal(got.scores, scores)


def assert_same_tracks(a: list[FrameTracks], b: list[FrameTracks]) -> None:
    assert [t.index for t in a] == [t.index for t in b]
    for x, y in zip(a, b, strict=True):
        assert (x.obj_ids, x.labels) == (y.obj_ids, y.labels)
        assert np.array_equal(x.masks, y.masks)
        assert np.array_equal(x.scores, y.scores)


def holdings(session: Any) -> dict[str, Any]:
    """What a transformers inference session holds, per object index."""
    return {
        "pixels": len(session.processed_frames),
        "cond": {i: sorted(o["cond_frame_outputs"]) for i, o in session.output_dict_per_obj.items()},
        "other": {i: sorted(o["non_cond_frame_outputs"]) for i, o in session.output_dict_per_obj.items()},
        "other_keys": {
            key
            for o in session.output_dict_per_obj.values()
            for out in o["non_cond_frame_outputs"].values()
            for key in out
        },
        "tracked": {i: sorted(frames) for i, frames in session.frames_tracked_per_obj.items()},
    }
