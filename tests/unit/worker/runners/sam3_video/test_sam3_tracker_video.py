"""The SAM3 video tracker against transformers' documented whole-video calls, on a shrunk seeded-random model.

Random weights give near-random masks, so every assertion is exact equality, shapes, dtypes or determinism; the
references run in the same process, under the same settings."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError, PromptOutOfBoundsError
from tests.support.sam3_clips import (
    BOX,
    HEIGHT,
    LATER,
    LENGTH,
    POINT,
    REFERENCE_PROMPTS,
    SIZE,
    WIDTH,
    LoggedFrames,
    assert_equals_reference,
    assert_same_tracks,
    clip,
    clip_settings,
    holdings,
    seed_two,
)
from tests.support.sam3_reference import (
    continue_track_video,
    present_tracker_video,
    reference_track_video,
    reference_tracker_video,
)
from worker.runners import sam3_tracker_video, sam3_video
from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner
from worker.runners.sam3_video import memory_window
from worker.runners.video import FrameTracks, Seed


@pytest.fixture(scope="module")
def tracked(video_tracker: Sam3TrackerVideoRunner) -> tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames]:
    """The two-object run through the whole clip; after every frame, what the session held."""
    frames = LoggedFrames(clip())
    session = video_tracker.open(frames)
    seed_two(session)
    tracks, held = [], []
    for frame in session.propagate(0, LENGTH - 1):
        tracks.append(frame)
        held.append(holdings(session._session))
    return tracks, held, frames


# --- the tracker -----------------------------------------------------------------------------------------------------


def test_tracker_equals_the_whole_video_reference(tracked: tuple[list[FrameTracks], Any, Any]) -> None:
    tracks, _, _ = tracked
    model, processor = present_tracker_video(0, SIZE)
    _, reference = reference_track_video(model, processor, clip(), REFERENCE_PROMPTS)
    assert_equals_reference(tracks, reference)
    assert [t.index for t in tracks] == list(range(LENGTH))
    assert all(t.obj_ids == [1, 2] for t in tracks)  # object 2 is tracked from frame 0 on, as SAM2 does
    assert all(t.masks.shape == (2, HEIGHT, WIDTH) and t.masks.dtype == np.bool_ for t in tracks)
    assert all(t.scores.dtype == np.float32 and ((t.scores > 0) & (t.scores < 1)).all() for t in tracks)
    assert all(t.masks.any(axis=(1, 2)).all() for t in tracks)  # not vacuous: every object has a mask everywhere


def test_tracker_equals_the_reference_on_a_video_shorter_than_the_memory_window(
    video_tracker: Sam3TrackerVideoRunner,
) -> None:
    """Under 16 frames transformers' streaming mode scales the object pointers' temporal encoding by 15, its
    whole-video mode by ``length - 1``; the session runs the latter. (With random weights the pointers weigh so
    little that the two modes' masks agree here: this guards the short-video path, it cannot tell the modes apart.)
    """
    video = clip(10)
    session = video_tracker.open(LoggedFrames(video))
    first = seed_two(session)
    tracks = list(session.propagate(0, 9))
    model, processor = present_tracker_video(0, SIZE)
    _, reference = reference_track_video(model, processor, video, REFERENCE_PROMPTS)
    assert_equals_reference(tracks, reference)
    assert [(t.index, t.obj_ids) for t in first] == [(0, [1]), (LATER, [1, 2])]


def test_tracker_reads_frames_once_in_order_and_prunes(
    video_tracker: Sam3TrackerVideoRunner, tracked: tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames]
) -> None:
    _, held, frames = tracked
    window = memory_window(video_tracker._model.config)
    assert window == 16  # the released memory bank: max(7 masks, 16 object pointers)
    assert frames.reads == [0, 0, LATER, *range(LENGTH)]  # the size, the two seeded frames, then each frame once
    for frame, holding in enumerate(held):
        assert holding["pixels"] == 0
        assert holding["cond"] == {0: [0], 1: [LATER]}  # seeded frames are kept
        for other in holding["other"].values():
            assert len(other) <= window
            assert all(frame - window < f <= max(frame, LATER) for f in other)
        assert holding["other_keys"] == {"object_pointer", "object_score_logits", "maskmem_features", "maskmem_pos_enc"}
        assert all(min(tracked_frames, default=frame) >= frame for tracked_frames in holding["tracked"].values())
    assert held[-1]["other"] == {i: list(range(LENGTH - window, LENGTH)) for i in (0, 1)}


def test_pruning_changes_no_mask(
    video_tracker: Sam3TrackerVideoRunner,
    tracked: tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sam3_tracker_video, "prune", lambda *args: None)
    session = video_tracker.open(LoggedFrames(clip()))
    seed_two(session)
    unpruned = list(session.propagate(0, LENGTH - 1))
    assert_same_tracks(unpruned, tracked[0])
    holding = holdings(session._session)
    assert holding["pixels"] == LENGTH  # everything kept: the pruning above was real
    assert len(holding["other"][0]) == LENGTH - 1


def test_tracker_resumes_from_a_snapshot(
    video_tracker: Sam3TrackerVideoRunner, tracked: tuple[list[FrameTracks], Any, Any]
) -> None:
    uninterrupted, _, _ = tracked
    cut = 17  # past the memory window: the snapshot holds pruned state
    session = video_tracker.open(LoggedFrames(clip()))
    seed_two(session)
    head = []
    for frame in session.propagate(0, LENGTH - 1):  # as the pipeline does: a snapshot between two frames
        head.append(frame)
        if frame.index == cut:
            state = session.snapshot()
            break
    payload = torch.load(io.BytesIO(state), weights_only=True)
    assert payload["last"] == cut and payload["video"] == [LENGTH, HEIGHT, WIDTH]

    fresh = Sam3TrackerVideoRunner("sam3_tracker", *present_tracker_video(0, SIZE), "cpu")  # another worker
    frames = LoggedFrames(clip())
    resumed = fresh.resume(frames, state)
    with pytest.raises(ValueError, match=f"continues at frame {cut + 1}"):
        resumed.propagate(cut, LENGTH - 1)
    tail = [*resumed.propagate(cut + 1, 20), *resumed.propagate(21, LENGTH - 1)]
    assert_same_tracks(head + tail, uninterrupted)
    assert frames.reads == list(range(cut + 1, LENGTH))
    with pytest.raises(ValueError, match="snapshot is of 'sam3_tracker'"):
        fresh.resume(LoggedFrames(clip(LENGTH - 1)), state)
    with pytest.raises(ValueError, match="not a SAM3 video session snapshot"):
        fresh.resume(frames, b"not a snapshot")


def test_reseeding_after_propagation_equals_the_reference(video_tracker: Sam3TrackerVideoRunner) -> None:
    """Object 1 corrected and object 3 added on frame 5, the frame last propagated, then tracking goes on."""
    video = clip(12)
    boxes = [[6.0, 14.0, 36.0, 36.0], [55.0, 38.0, 78.0, 62.0]]
    session = video_tracker.open(LoggedFrames(video))
    session.add(0, [Seed(1, box=BOX)])
    tracks = list(session.propagate(0, 5))
    tracks.append(
        session.add(
            5,
            [
                Seed(1, box=np.array(box, np.float32)) if i == 0 else Seed(3, box=np.array(box, np.float32))
                for i, box in enumerate(boxes)
            ],
        )
    )
    with pytest.raises(ValueError, match=r"frame last propagated \(5\)"):
        session.add(4, [Seed(1, box=BOX)])
    tracks += session.propagate(6, 11)

    model, processor = present_tracker_video(0, SIZE)
    reference_session, reference = reference_track_video(model, processor, video, REFERENCE_PROMPTS[:1], stop=5)
    reference += continue_track_video(model, processor, reference_session, 5, [1, 3], {"input_boxes": [boxes]})
    assert_equals_reference(tracks, reference)
    assert tracks[-1].obj_ids == [1, 3]
    assert session._session.output_dict_per_obj[0]["cond_frame_outputs"].keys() == {0}  # a correction, not a condition


def test_many_seeded_frames_equal_the_reference(video_tracker: Sam3TrackerVideoRunner) -> None:
    """One object boxed on six frames: more conditioning frames than the 4 a frame attends to. Once the oldest are
    out of the window too, the session drops their memory (keeping their object pointers)."""
    seeded = range(6)
    session = video_tracker.open(LoggedFrames(clip()))
    boxes = [BOX + np.float32(2 * i) for i in seeded]
    for i, box in zip(seeded, boxes, strict=True):
        session.add(i, [Seed(1, box=box)])
    tracks = list(session.propagate(0, LENGTH - 1))
    model, processor = present_tracker_video(0, SIZE)
    prompts: list[tuple[int, int | list[int], dict[str, Any]]] = [
        (i, 1, {"input_boxes": [[box.tolist()]]}) for i, box in zip(seeded, boxes, strict=True)
    ]
    _, reference = reference_track_video(model, processor, clip(), prompts)
    assert_equals_reference(tracks, reference)
    cond = session._session.output_dict_per_obj[0]["cond_frame_outputs"]
    assert {frame: "maskmem_features" in out for frame, out in cond.items()} == {i: i >= 2 for i in seeded}


def test_tracker_snapshot_is_compact(video_tracker: Sam3TrackerVideoRunner) -> None:
    session = video_tracker.open(LoggedFrames(clip(4)))
    session.add(0, [Seed(1, box=BOX), Seed(2, point_coords=POINT, point_labels=np.array([1], np.int32))])
    list(session.propagate(0, 3))
    payload = torch.load(io.BytesIO(session.snapshot()), weights_only=True)
    assert set(payload["session"]) == set(sam3_video.TRACKER_STATE)
    outputs = payload["session"]["output_dict_per_obj"]
    tensors = [t for o in outputs.values() for kind in o.values() for out in kind.values() for t in out.values()]
    # both objects' memories were encoded as one batch: each saved slice holds its own values only
    assert tensors and all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)
    assert max(t.numel() for t in tensors) == 64 * 64  # an 8x8 memory of 64 channels: no masks, no pixels


def test_tracker_refusals(video_tracker: Sam3TrackerVideoRunner) -> None:
    with pytest.raises(ModelUnavailableError, match="the SAM3 video tracker is 'sam3_tracker'"):
        Sam3TrackerVideoRunner.load("sam3", clip_settings())
    with pytest.raises(ValueError, match="text concepts"):
        video_tracker.open(LoggedFrames(clip(3)), ["person"])
    with pytest.raises(ValueError, match="no frames"):
        video_tracker.open(LoggedFrames([]))
    session = video_tracker.open(LoggedFrames(clip(3)))
    with pytest.raises(ValueError, match="nothing to track"):
        session.propagate(0, 2)
    with pytest.raises(PromptOutOfBoundsError, match="prompt 0: box"):
        session.add(0, [Seed(1, box=np.array([0.0, 0.0, WIDTH + 1.0, 5.0], np.float32))])
    with pytest.raises(ValueError, match="one seed per object"):
        session.add(0, [Seed(1, box=BOX), Seed(1, box=BOX)])
    with pytest.raises(ValueError, match="outside the video's 3 frames"):
        session.add(3, [Seed(1, box=BOX)])


def test_tracker_load_builds_the_seeded_model() -> None:
    runner = Sam3TrackerVideoRunner.load("sam3_tracker", clip_settings())
    reference, _ = reference_tracker_video(0, SIZE)
    expected = reference.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in runner._model.state_dict().items())
    assert (runner.model_id, runner.device, runner.image_size) == ("sam3_tracker", "cpu", SIZE)
