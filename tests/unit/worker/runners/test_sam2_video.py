"""The streaming SAM2 tracker against Meta's ``SAM2VideoPredictor`` (seeded random weights, shrunk input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from worker.runners.sam2_video import Sam2VideoRunner, Sam2VideoSession
from worker.runners.video import FrameTracks, Seed
from worker.settings import WorkerSettings

MODEL = "sam2.1_hiera_tiny"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SIZE = 256
FRAMES = 28
"""More than the 16-frame attention window, so pruning happens and is proven harmless."""
BOX_A = np.array([10, 12, 50, 44], dtype=np.float32)
BOX_B = np.array([70, 40, 110, 80], dtype=np.float32)
LATE = 9


def _clip() -> list[np.ndarray]:
    """Two coloured rectangles drifting across a noisy background (120x160)."""
    rng = np.random.default_rng(3)
    frames = []
    for t in range(FRAMES):
        frame = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        frame[12 + t : 44 + t, 10 + t : 50 + t] = (220, 40, 40)
        frame[40:80, 70 + t // 2 : 110 + t // 2] = (40, 200, 60)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def jpeg_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """The clip as Meta's loader wants it (a folder of numbered JPEGs), and the same frames as decoded arrays."""
    folder = tmp_path_factory.mktemp("clip")
    decoded = []
    for t, frame in enumerate(_clip()):
        path = folder / f"{t:05d}.jpg"
        Image.fromarray(frame).save(path, quality=95)
        decoded.append(np.array(Image.open(path).convert("RGB")))
    return folder, decoded


@pytest.fixture(scope="module")
def runner() -> Sam2VideoRunner:
    settings = WorkerSettings(random_weights=True, image_size=SIZE, device="cpu", seed=0, allow_download=False)
    return Sam2VideoRunner.load(MODEL, settings)


def _reference(folder: Path) -> dict[int, np.ndarray]:
    """Meta's documented video flow: init_state on the frame folder, prompts, propagate_in_video."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    predictor = build_sam2_video_predictor(
        CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={SIZE}"]
    )
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # Meta's documented call, on CPU
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=BOX_A)
        predictor.add_new_points_or_box(
            state,
            frame_idx=LATE,
            obj_id=7,
            points=np.array([[90, 60]], np.float32),
            labels=np.array([1], np.int32),
            box=BOX_B,
        )
        return {t: (logits[:, 0] > 0.0).numpy() for t, _, logits in predictor.propagate_in_video(state)}


def _seed(session: Sam2VideoSession) -> None:
    session.add(0, [Seed(obj_id=1, box=BOX_A)])
    session.add(
        LATE,
        [
            Seed(
                obj_id=7, box=BOX_B, point_coords=np.array([[90, 60]], np.float32), point_labels=np.array([1], np.int32)
            )
        ],
    )


def _masks(tracks: list[FrameTracks]) -> dict[int, np.ndarray]:
    return {t.index: t.masks for t in tracks}


@dataclass(frozen=True)
class Streamed:
    """One streaming run over the whole clip (shared by the tests below: a run costs tens of seconds on CPU)."""

    tracks: list[FrameTracks]
    kept: list[dict[int, tuple[list[int], list[int]]]]
    """The frames the session kept, per object, after each frame."""
    window: int


@pytest.fixture(scope="module")
def streamed(runner: Sam2VideoRunner, jpeg_clip: Any) -> Streamed:
    _, frames = jpeg_clip
    session = runner.open(frames)
    _seed(session)
    tracks, kept = [], []
    for frame in session.propagate(0, FRAMES - 1):
        tracks.append(frame)
        kept.append({obj: (list(cond), list(non_cond)) for obj, (cond, non_cond) in session.kept_frames().items()})
    return Streamed(tracks, kept, session.window)


def test_streaming_masks_equal_metas_full_predictor(streamed: Streamed, jpeg_clip: Any) -> None:
    folder, _ = jpeg_clip
    expected = _reference(folder)
    got = streamed.tracks

    assert [t.index for t in got] == list(range(FRAMES))
    assert all(t.obj_ids == [1, 7] for t in got)
    for t in got:
        assert t.masks.shape == (2, 120, 160) and t.scores.dtype == np.float32
        assert np.array_equal(t.masks, expected[t.index]), f"frame {t.index} differs"
    assert any(t.masks[0].any() for t in got) and any(t.masks[1].any() for t in got)  # not trivially empty


def test_state_stays_within_the_attention_window(streamed: Streamed) -> None:
    assert streamed.window == 16
    for tracks, kept in zip(streamed.tracks, streamed.kept, strict=True):
        for cond, non_cond in kept.values():
            assert len(non_cond) <= streamed.window
            assert all(t > tracks.index - streamed.window for t in non_cond)
            assert len(cond) == 1  # the seed frame only
    assert any(len(non_cond) == streamed.window for kept in streamed.kept for _, non_cond in kept.values())


def test_resume_from_a_snapshot_gives_the_same_masks(
    runner: Sam2VideoRunner, jpeg_clip: Any, streamed: Streamed
) -> None:
    _, frames = jpeg_clip
    expected = _masks(streamed.tracks)

    first = runner.open(frames)
    _seed(first)
    head = list(first.propagate(0, 19))
    state = first.snapshot()
    del first
    tail = list(runner.resume(frames, state).propagate(20, FRAMES - 1))

    got = _masks(head + tail)
    assert sorted(got) == list(range(FRAMES))
    assert all(np.array_equal(got[t], expected[t]) for t in got)


def test_reseeding_keeps_ids_and_bounds_conditioning_frames(runner: Sam2VideoRunner, jpeg_clip: Any) -> None:
    _, frames = jpeg_clip
    session = runner.open(frames, reseeding=True)
    session.add(0, [Seed(obj_id=1, box=BOX_A)])
    start = 0
    for reseed in range(2, FRAMES, 2):
        list(session.propagate(start, reseed))
        tracks = session.add(reseed, [Seed(obj_id=1, box=BOX_A + reseed)])
        assert tracks.obj_ids == [1]
        start = reseed + 1
    cond, _ = session.kept_frames()[1]
    assert len(cond) <= 8 + session.window // 2


def test_resume_refuses_a_foreign_state(runner: Sam2VideoRunner, jpeg_clip: Any) -> None:
    _, frames = jpeg_clip
    with pytest.raises(ValueError, match="not a SAM2 tracking state"):
        runner.resume(frames, b"garbage")
    session = runner.open(frames[:5])
    session.add(0, [Seed(obj_id=1, box=BOX_A)])
    with pytest.raises(ValueError, match="saved for a video"):
        runner.resume(frames, session.snapshot())


def test_concepts_are_refused(runner: Sam2VideoRunner, jpeg_clip: Any) -> None:
    with pytest.raises(ValueError, match="sam3"):
        runner.open(jpeg_clip[1], concepts=["car"])
