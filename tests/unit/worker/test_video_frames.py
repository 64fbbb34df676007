"""Lazily decoded frames (``worker.video``) and the synthetic clips the track tests build on."""

from __future__ import annotations

import json
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from tasks.errors import InvalidVideoError
from tests.support.videos import (
    SUFFIXES,
    Shape,
    assert_frame_is,
    detections_jsonl,
    moving_shapes,
    probe_clip,
    truncated_copy,
    write_clip,
)
from worker import video_probe
from worker.runners.video import Frames
from worker.video import VideoFrames
from worker.video_probe import select_frames


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_frames_decode_in_order_with_their_colours(clips: dict[str, Path], suffix: str) -> None:
    info = probe_clip(clips[suffix])
    with VideoFrames(clips[suffix], info, select_frames(info)) as frames:
        assert len(frames) == 30
        for index in range(len(frames)):
            assert_frame_is(frames[index], index)


def test_frames_map_processed_index_to_frame_number_and_time(clips: dict[str, Path]) -> None:
    info = probe_clip(clips[".mp4"])
    with VideoFrames(clips[".mp4"], info, select_frames(info, start=2, stride=5)) as frames:
        protocol: Frames = frames  # what every tracker takes (checked by mypy)
        assert len(protocol) == 6
        assert len(frames) == 6
        assert [frames.frame_number(i) for i in range(6)] == [2, 7, 12, 17, 22, 27]
        assert frames.time(1) == pytest.approx(7 / 30)
        assert frames.selected.tolist() == [2, 7, 12, 17, 22, 27]
        for index in range(len(frames)):
            assert_frame_is(frames[index], frames.frame_number(index))
        assert_frame_is(frames[-1], 27)
        with pytest.raises(IndexError):
            frames[6]


def test_going_back_reopens_and_is_still_right(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    real_open = video_probe.open_video

    def counting_open(path: Path) -> Any:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr("worker.video.open_video", counting_open)  # the name VideoFrames calls
    info = probe_clip(clips[".mkv"])
    opened.clear()
    with VideoFrames(clips[".mkv"], info, select_frames(info)) as frames:
        assert_frame_is(frames[20], 20)
        assert_frame_is(frames[25], 25)  # forward: same decoder
        assert len(opened) == 1
        assert_frame_is(frames[25], 25)  # the cached frame: no decoding
        assert_frame_is(frames[5], 5)  # backward: re-opened
        assert len(opened) == 2
        assert_frame_is(frames[0], 0)
        assert_frame_is(frames[29], 29)
        assert len(opened) == 3


def test_frames_are_fresh_writable_arrays(clips: dict[str, Path]) -> None:
    info = probe_clip(clips[".mp4"])
    with VideoFrames(clips[".mp4"], info, select_frames(info)) as frames:
        first = frames[4]
        again = frames[4]
        assert first is not again
        assert first.flags.writeable and first.flags.c_contiguous
        first[:] = 0  # the caller's to keep: the reader's copy is untouched
        assert_frame_is(frames[4], 4)


def test_closed_reader_refuses(clips: dict[str, Path]) -> None:
    info = probe_clip(clips[".mp4"])
    frames = VideoFrames(clips[".mp4"], info, select_frames(info))
    frames[0]
    frames.close()
    frames.close()
    with pytest.raises(RuntimeError, match="closed"):
        frames[1]


def test_selection_outside_the_video_is_refused(clips: dict[str, Path]) -> None:
    info = probe_clip(clips[".mp4"])
    with pytest.raises(ValueError, match="0-29"):
        VideoFrames(clips[".mp4"], info, np.array([0, 30], dtype=np.int64))


def test_file_cut_after_probe_names_the_frame(clips: dict[str, Path], tmp_path: Path) -> None:
    """Corruption found mid-stream: the frames run out before the one asked for."""
    path = tmp_path / "clip.mkv"
    path.write_bytes(clips[".mkv"].read_bytes())
    info = probe_clip(path)
    truncated_copy(clips[".mkv"], path, 0.4)
    with VideoFrames(path, info, select_frames(info)) as frames:
        assert_frame_is(frames[0], 0)
        with pytest.raises(InvalidVideoError, match="before frame 29"):
            frames[29]


def test_data_cut_mid_stream_names_the_first_missing_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    noisy = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    path = tmp_path / "web.mp4"
    write_clip(path, iter(noisy), fps=20, faststart=True)
    info = probe_clip(path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    reached: list[int] = []

    def read_all(frames: VideoFrames) -> None:
        for index in range(len(frames)):
            frames[index]
            reached.append(index)

    with VideoFrames(path, info, select_frames(info)) as frames, pytest.raises(InvalidVideoError) as failure:
        read_all(frames)
    # Frame threading hides the decoder's error; the frames that never come out are what gives it away.
    assert 0 < len(reached) < 40
    assert f"frame {len(reached)}" in failure.value.message


def test_moving_shapes_round_trip(tmp_path: Path) -> None:
    """A clip of the test helper's shapes decodes to the shapes where the ground truth puts them."""
    shapes = [
        Shape(colour=(220, 40, 40), size=(16, 12), start=(2.0, 4.0), velocity=(3.0, 1.0)),
        Shape(colour=(40, 220, 40), size=(10, 10), start=(50.0, 30.0), velocity=(-2.0, 0.0), first_frame=5),
    ]
    frames, truths = zip(*moving_shapes(12, 64, 48, shapes, background="plain"), strict=True)
    path = tmp_path / "shapes.mp4"
    write_clip(path, frames, fps=12)
    info = probe_clip(path)
    with VideoFrames(path, info, select_frames(info)) as decoded:
        for index, truth in enumerate(truths):
            for box in truth:
                inside = decoded[index][box.y0 + 2 : box.y1 - 2, box.x0 + 2 : box.x1 - 2].reshape(-1, 3).mean(axis=0)
                assert np.abs(inside - shapes[box.obj_id].colour).max() <= 20


def test_shapes_appear_move_leave_and_vanish() -> None:
    shapes = [
        Shape(colour=(200, 0, 0), size=(10, 6), start=(50.0, 2.0), velocity=(4.0, 0.0), label="runner"),
        Shape(colour=(0, 200, 0), size=(8, 8), start=(5.0, 30.0), first_frame=3, last_frame=4, kind="ellipse"),
    ]
    drawn = list(moving_shapes(8, 64, 48, shapes, background="plain"))
    boxes = [[(b.obj_id, b.x0, b.y0, b.x1, b.y1) for b in truth] for _, truth in drawn]
    assert boxes[0] == [(0, 50, 2, 60, 8)]
    assert boxes[1] == [(0, 54, 2, 64, 8)]
    assert boxes[2] == [(0, 58, 2, 64, 8)]  # clipped at the right edge
    assert boxes[3] == [(0, 62, 2, 64, 8), (1, 5, 30, 13, 38)]  # the disc appears on its first frame
    assert boxes[4] == [(1, 5, 30, 13, 38)]  # the runner has left the picture
    assert boxes[5] == boxes[6] == boxes[7] == []  # the disc's last frame was 4
    frame, truth = drawn[0]
    assert truth[0].label == "runner"
    assert (frame[2:8, 50:60] == (200, 0, 0)).all()
    assert (frame[10:, :] == 96).all()


def test_detections_jsonl_from_ground_truth() -> None:
    shapes = [Shape(colour=(200, 0, 0), size=(10, 10), start=(5.0, 5.0), velocity=(1.0, 0.0), label="car")]
    truth = [boxes for _, boxes in moving_shapes(7, 64, 48, shapes)]
    rows = [json.loads(line) for line in detections_jsonl(truth, every_n=3).splitlines()]
    assert [row["frame"] for row in rows] == [0, 3, 6]
    assert rows[1]["boxes"] == [{"x0": 8.0, "y0": 5.0, "x1": 18.0, "y1": 15.0, "label": "car", "score": 0.9}]

    jittered = [json.loads(line) for line in detections_jsonl(truth, jitter=0.05, seed=1).splitlines()]
    assert len(jittered) == 7
    box = jittered[6]["boxes"][0]
    assert box != {"x0": 11.0, "y0": 5.0, "x1": 21.0, "y1": 15.0, "label": "car", "score": 0.9}
    assert abs(box["x0"] - 11) < 3 and abs(box["x1"] - 21) < 3 and box["x1"] > box["x0"]


# memory ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 frames of 640x360: 207 MB as RGB arrays, were they kept."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    shapes = [Shape(colour=(230, 190, 40), size=(120, 80), start=(0.0, 140.0), velocity=(1.5, 0.0))]
    write_clip(path, (frame for frame, _ in moving_shapes(300, 640, 360, shapes, background="plain")), fps=30)
    return path


def test_reading_hundreds_of_frames_holds_one(long_clip: Path) -> None:
    info = probe_clip(long_clip)
    assert info.frame_count == 300
    frame_bytes = 640 * 360 * 3
    process = psutil.Process()
    with VideoFrames(long_clip, info, select_frames(info)) as frames:
        returned = weakref.ref(frames[0])
        assert returned() is None  # the reader keeps no reference to what it hands out
        # The pixels live in FFmpeg's buffers, which only RSS sees; tracemalloc sees any Python-side pile-up.
        rss_before = process.memory_info().rss
        tracemalloc.start()
        try:
            for index in range(len(frames)):
                frames[index]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rss_growth = process.memory_info().rss - rss_before
    assert peak < 3 * frame_bytes, f"traced peak {peak} bytes while decoding 300 frames"
    assert rss_growth < 40 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB over 300 frames"
