"""The track pipeline's pieces without a model: re-seed matching, detections files, chunked results and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage.local import LocalStore
from tasks.errors import InvalidDetectionsError, TooManyObjectsError
from tasks.jobs import new_job
from tasks.track_specs import TrackSpec
from worker.encoders import decode_rle
from worker.pipeline.objects import JobObjects
from worker.pipeline.track_results import TrackedObject, TrackResults
from worker.pipeline.tracking import DetectionBox, _detections, _match
from worker.runners.video import FrameTracks
from worker.video_probe import VideoInfo

SPEC = TrackSpec.model_validate(
    {"type": "track", "video": {"upload": "upl_1"}, "objects": [{"id": 1, "box": {"x0": 0, "y0": 0, "x1": 4, "y1": 4}}]}
)
INFO = VideoInfo(width=100, height=80, times=np.arange(10, dtype=np.float64) / 10, fps=10.0, duration=1.0)


def _results(tmp_path: Path, **overrides: Any) -> TrackResults:
    store = LocalStore(tmp_path / "objects", "http://localhost", b"k" * 32)
    job = new_job(SPEC, "default").model_copy(update={"id": "job_fixed"})
    options: dict[str, Any] = {"polygons": False, "chunk_frames": 3, "chunk_seconds": 3600.0} | overrides
    return TrackResults(JobObjects(store), job, lambda i: (i * 2, i / 5), **options)


def _frame(index: int, boxes: list[tuple[int, int, int, int]], ids: list[int] | None = None) -> FrameTracks:
    masks = np.zeros((len(boxes), 80, 100), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    ids = ids if ids is not None else list(range(len(boxes)))
    return FrameTracks(index=index, obj_ids=ids, masks=masks, scores=np.full(len(boxes), 0.5, np.float32))


def _box(x0: float, y0: float, x1: float, y1: float, label: str | None = None, score: float | None = None) -> Any:
    return DetectionBox(x0=x0, y0=y0, x1=x1, y1=y1, label=label, score=score)


def test_detections_match_live_tracks_by_iou_and_unmatched_ones_start_new_ids(tmp_path: Path) -> None:
    results = _results(tmp_path)
    results.objects.update({4: TrackedObject(label="car"), 9: TrackedObject(label="dog")})
    current = _frame(5, [(10, 10, 30, 30), (60, 40, 90, 70)], ids=[4, 9])
    seeds = _match(
        current,
        [_box(61, 41, 91, 71, "dog", 0.8), _box(0, 60, 8, 79, "cat", 0.6), _box(11, 9, 31, 29, None, 0.9)],
        results,
        max_objects=8,
    )
    assert [s.obj_id for s in seeds] == [9, 10, 4]
    assert (results.objects[10].label, results.objects[10].detection_score) == ("cat", 0.6)
    assert (results.objects[4].label, results.objects[4].detection_score) == ("car", 0.9)  # no label keeps the old
    assert results.objects[9].seed_box == [61, 41, 91, 71]


def test_a_track_whose_mask_is_lost_still_matches_its_previous_detection(tmp_path: Path) -> None:
    results = _results(tmp_path)
    results.objects[3] = TrackedObject(seed_box=[20, 20, 40, 40])
    lost = _frame(6, [(0, 0, 0, 0)], ids=[3])
    assert [s.obj_id for s in _match(lost, [_box(22, 21, 42, 41)], results, max_objects=8)] == [3]


def test_one_detection_per_track_even_when_two_overlap_it(tmp_path: Path) -> None:
    results = _results(tmp_path)
    results.objects[0] = TrackedObject()
    seeds = _match(_frame(0, [(10, 10, 30, 30)]), [_box(10, 10, 30, 30), _box(11, 11, 31, 31)], results, 8)
    assert [s.obj_id for s in seeds] == [0, 1]


def test_re_seeding_past_the_object_limit_fails(tmp_path: Path) -> None:
    results = _results(tmp_path)
    results.objects[0] = TrackedObject()
    with pytest.raises(TooManyObjectsError, match="SAMQ_WORKER_MAX_TRACK_OBJECTS"):
        _match(_frame(0, [(10, 10, 30, 30)]), [_box(60, 60, 70, 70)], results, max_objects=1)


def test_detections_file_lines_map_to_processed_frames() -> None:
    data = b'{"frame": 0, "boxes": [{"x0": 1, "y0": 1, "x1": 5, "y1": 5, "label": "a"}]}\n\n{"frame": 3, "boxes": []}\n'
    data += b'{"frame": 4, "boxes": [{"x0": 1, "y0": 1, "x1": 5, "y1": 5}]}\n'
    found = _detections(data, np.array([0, 2, 4], dtype=np.int64), INFO)
    assert sorted(found) == [0, 2]  # frame 3 is not processed; frame 4 is processed index 2
    assert found[0][0].label == "a"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "line 1"),
        (b'{"frame": -1, "boxes": []}', "frame"),
        (b'{"frame": 0, "boxes": [{"x0": 5, "y0": 1, "x1": 2, "y1": 5}]}', "x1 > x0"),
        (b'{"frame": 0, "boxes": [{"x0": 500, "y0": 1, "x1": 600, "y1": 5}]}', "outside the 100x80 frame"),
        (b'{"frame": 0, "boxes": [{"x0": 1, "y0": 1, "x1": 2, "y1": 5, "score": 3}]}', "score"),
    ],
)
def test_a_bad_detections_file_is_invalid_detections(line: bytes, says: str) -> None:
    with pytest.raises(InvalidDetectionsError, match=says):
        _detections(line, np.arange(10, dtype=np.int64), INFO)


def test_chunks_flush_with_state_and_a_new_attempt_resumes_after_them(tmp_path: Path) -> None:
    first = _results(tmp_path)
    for index in range(7):
        first.add(_frame(index, [(10 + index, 10, 30, 30)]))
        if first.due():
            first.flush(f"state-{index}".encode())
    assert (first.done, first.manifest.next_index) == (7, 6)  # frame 6 was pending when the attempt died

    second = _results(tmp_path)
    assert (second.done, second.state()) == (6, b"state-5")
    assert [f.name for f in (tmp_path / "objects/default/jobs/job_fixed/parts").iterdir() if "state" in f.name] == [
        "state-00000005.pt"
    ]
    for index in range(6, 8):
        second.add(_frame(index, [(10 + index, 10, 30, 30)]))
    result = second.finish({"frames": 8, "objects_tracked": 1, "partial": False}, None)

    rows = [
        json.loads(line)
        for line in (tmp_path / "objects/default/jobs/job_fixed/tracks.jsonl").read_bytes().splitlines()
    ]
    assert [(r["frame"], r["time"]) for r in rows] == [(i * 2, i / 5) for i in range(8)]
    assert all(decode_rle(r["objects"][0]["mask"])[10, 10 + i] for i, r in enumerate(rows))
    assert [f.name for f in result.files] == ["tracks.jsonl", "summary.json"]
    assert result.summary == {"frames": 8, "objects_tracked": 1, "partial": False}
    assert not (tmp_path / "objects/default/jobs/job_fixed/parts").exists()
    summary = json.loads((tmp_path / "objects/default/jobs/job_fixed/summary.json").read_bytes())
    assert summary["objects"] == [
        {"id": 0, "label": None, "detection_score": None, "first_frame": 0, "last_frame": 14, "frames_visible": 8}
    ]


def test_frames_must_be_recorded_in_order(tmp_path: Path) -> None:
    results = _results(tmp_path)
    with pytest.raises(ValueError, match="out of order"):
        results.add(_frame(1, []))


def test_absent_objects_are_left_out_of_a_frame(tmp_path: Path) -> None:
    results = _results(tmp_path, polygons=True)
    results.add(_frame(0, [(10, 10, 30, 30), (0, 0, 0, 0)]))
    results.flush(None)
    row = json.loads((tmp_path / "objects/default/jobs/job_fixed/parts/00000000-00000000.jsonl").read_bytes())
    assert [o["id"] for o in row["objects"]] == [0] and "polygon" in row["objects"][0]


def test_a_chunk_is_also_due_by_age_so_a_slow_video_keeps_resume_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("worker.pipeline.track_results.time.monotonic", lambda: now[0])
    results = _results(tmp_path, chunk_frames=100, chunk_seconds=30.0)
    assert not results.due()  # nothing pending is never due, however old
    now[0] += 60
    assert not results.due()
    results.add(_frame(0, [(10, 10, 30, 30)]))
    assert results.due()
    results.flush(b"state-0")
    results.add(_frame(1, [(10, 10, 30, 30)]))
    now[0] += 29.9
    assert not results.due()  # the age counts from the last flush
    now[0] += 0.1
    assert results.due()
