"""SAM3 concept tracking against transformers' documented whole-video call, and real-weight loading of the video
runners from a checkpoint folder (shrunk seeded-random models)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.sam3_clips import (
    BOX,
    HEIGHT,
    PHRASES,
    SIZE,
    WIDTH,
    LoggedFrames,
    assert_same_tracks,
    clip,
    clip_settings,
    holdings,
)
from tests.support.sam3_reference import (
    concept_video_model,
    reference_concept_video,
)
from worker.runners.sam3 import clip_tokenizer, image_processor, shrunk_video_config, video_processor
from worker.runners.sam3_concept_video import Sam3ConceptVideoRunner, Sam3ConceptVideoSession
from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner
from worker.runners.sam3_video import memory_window
from worker.runners.video import FrameTracks, Seed

from transformers import Sam3VideoModel, Sam3VideoProcessor  # isort: skip  (worker.runners.sam3 installs the shim)


# --- concepts --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_concept() -> Sam3ConceptVideoRunner:
    """The runner on a seeded random model that finds something (see ``concept_video_model``)."""
    return Sam3ConceptVideoRunner("sam3", *concept_video_model(0, SIZE), "cpu")


@pytest.fixture(scope="module")
def concept_run(video_concept: Sam3ConceptVideoRunner) -> tuple[list[FrameTracks], list[dict[str, Any]]]:
    """Both phrases through a 20-frame clip; after every frame, what the session held."""
    session = video_concept.open(LoggedFrames(clip(20)), PHRASES)
    tracks, held = [], []
    for frame in session.propagate(0, 19):
        tracks.append(frame)
        inner = session._session
        held.append(
            {
                **holdings(inner),
                "by_frame": len(inner.obj_id_to_tracker_score_frame_wise) + len(inner.suppressed_obj_ids),
                "evidence": max((len(v) for v in inner.unmatched_frame_inds.values()), default=0),
            }
        )
    return tracks, held


def test_concept_equals_the_whole_video_reference(concept_run: tuple[list[FrameTracks], Any]) -> None:
    tracks_per_frame, _ = concept_run
    reference = reference_concept_video(*concept_video_model(0, SIZE), clip(20), PHRASES)
    assert len(tracks_per_frame) == len(reference) == 20
    shown = 0
    for tracks, expected in zip(tracks_per_frame, reference, strict=True):
        ids = expected["object_ids"].tolist()
        rows = [tracks.obj_ids.index(obj_id) for obj_id in ids]
        assert np.array_equal(tracks.masks[rows], expected["masks"].numpy())
        hidden = [i for i in range(len(tracks.obj_ids)) if i not in rows]
        assert not tracks.masks[hidden].any()
        for phrase, obj_ids in expected["prompt_to_obj_ids"].items():
            assert all(tracks.labels[tracks.obj_ids.index(obj_id)] == phrase for obj_id in obj_ids)
        shown += int(expected["masks"].any(dim=(1, 2)).sum())
    assert shown > 0  # not vacuous


def test_concept_ids_labels_and_determinism(
    video_concept: Sam3ConceptVideoRunner, concept_run: tuple[list[FrameTracks], Any]
) -> None:
    tracks_per_frame, _ = concept_run
    again = list(video_concept.open(LoggedFrames(clip(20)), PHRASES).propagate(0, 19))
    assert_same_tracks(again, tracks_per_frame)
    seen: dict[int, str] = {}
    for tracks in tracks_per_frame:
        assert tracks.obj_ids == sorted(tracks.obj_ids)
        assert tracks.masks.shape == (len(tracks.obj_ids), HEIGHT, WIDTH) and tracks.masks.dtype == np.bool_
        assert tracks.scores.dtype == np.float32 and set(tracks.labels) <= set(PHRASES)
        new = [obj_id for obj_id in tracks.obj_ids if obj_id not in seen]
        assert all(obj_id > max(seen, default=-1) for obj_id in new)  # new instances get new ids
        for obj_id, label in zip(tracks.obj_ids, tracks.labels, strict=True):
            assert seen.setdefault(obj_id, label) == label  # an object keeps its phrase
    assert set(seen.values()) == set(PHRASES)


def test_concept_session_prunes(
    video_concept: Sam3ConceptVideoRunner, concept_run: tuple[Any, list[dict[str, Any]]]
) -> None:
    _, held = concept_run
    window = memory_window(video_concept._model.tracker_model.config)
    delay = video_concept._model.hotstart_delay
    for holding in held:
        assert holding["pixels"] == 0
        assert all(len(other) <= window for other in holding["other"].values())
        assert holding["other_keys"] <= {"object_pointer", "object_score_logits", "maskmem_features", "maskmem_pos_enc"}
        assert holding["by_frame"] <= 2  # the last frame's scores and suppressions only
        assert holding["evidence"] <= delay  # hotstart evidence of tracks still in their hotstart period only


def test_concept_resumes_mid_hotstart(
    video_concept: Sam3ConceptVideoRunner, concept_run: tuple[list[FrameTracks], Any]
) -> None:
    uninterrupted, _ = concept_run
    cut = 3
    session = video_concept.open(LoggedFrames(clip(20)), PHRASES)
    head = list(session.propagate(0, 1))  # chunks change nothing: frame 1 is held back until frame 15 is processed
    for tracks in session.propagate(2, 19):
        head.append(tracks)
        if tracks.index == cut:
            state = session.snapshot()
            break
    payload = torch.load(io.BytesIO(state), weights_only=True)
    assert (payload["next"], payload["processed"], len(payload["held"])) == (cut + 1, cut + 14, 14)

    frames = LoggedFrames(clip(20))
    resumed = Sam3ConceptVideoRunner("sam3", *concept_video_model(0, SIZE), "cpu").resume(frames, state)
    assert_same_tracks(head + list(resumed.propagate(cut + 1, 19)), uninterrupted)
    assert frames.reads == [18, 19]  # frames up to 17 were processed before the snapshot: their outputs were held


def test_concept_refusals(video_concept: Sam3ConceptVideoRunner, video_tracker: Sam3TrackerVideoRunner) -> None:
    frames = LoggedFrames(clip(3))
    with pytest.raises(ValueError, match="at least one phrase"):
        video_concept.open(frames)
    with pytest.raises(ValueError, match="blank"):
        video_concept.open(frames, ["person", " "])
    with pytest.raises(ValueError, match="cannot be re-seeded"):
        video_concept.open(frames, PHRASES, reseeding=True)
    session = video_concept.open(frames, PHRASES)
    assert isinstance(session, Sam3ConceptVideoSession)
    with pytest.raises(ValueError, match="not seeded"):
        session.add(0, [Seed(1, box=BOX)])
    list(session.propagate(0, 1))
    with pytest.raises(ValueError, match="continues at frame 2"):
        session.propagate(0, 2)
    with pytest.raises(ValueError, match="this session is 'sam3' at"):
        video_concept.resume(frames, video_tracker.open(frames).snapshot())


def test_concept_runner_with_random_weights_finds_nothing_deterministically() -> None:
    runner = Sam3ConceptVideoRunner.load("sam3", clip_settings())
    assert (runner.model_id, runner.image_size) == ("sam3", SIZE)
    runs = [list(runner.open(LoggedFrames(clip(3)), PHRASES).propagate(0, 2)) for _ in range(2)]
    assert_same_tracks(*runs)
    assert all(t.obj_ids == [] and t.masks.shape == (0, HEIGHT, WIDTH) for t in runs[0])


# --- real-weight loading from a checkpoint folder --------------------------------------------------------------------


def _write_sam3_video_checkpoint(directory: Path, seed: int) -> Any:
    """A shrunk ``facebook/sam3``-style checkpoint of the video model, with the processors it ships (image, video,
    tokenizer). The weights are written with safetensors directly, in the hub file's layout (see
    ``tests/unit/test_sam3_runners.py``)."""
    from safetensors.torch import save_file

    config = shrunk_video_config(SIZE)
    torch.manual_seed(seed)
    model = Sam3VideoModel(config)
    model.train(False)
    directory.mkdir(parents=True)
    config.save_pretrained(directory)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    processor = Sam3VideoProcessor(
        image_processor=image_processor(SIZE), video_processor=video_processor(SIZE), tokenizer=clip_tokenizer()
    )
    processor.save_pretrained(directory)
    return model


def test_video_runners_load_a_checkpoint_folder(tmp_path: Path) -> None:
    saved = _write_sam3_video_checkpoint(tmp_path / "sam3", seed=123)
    settings = clip_settings(random_weights=False, models_dir=tmp_path, image_size=None)
    video_concept = Sam3ConceptVideoRunner.load("sam3", settings)
    source = saved.state_dict()
    assert all(torch.equal(tensor, source[name]) for name, tensor in video_concept._model.state_dict().items())

    video_tracker = Sam3TrackerVideoRunner.load("sam3_tracker", settings)
    for name, tensor in video_tracker._model.state_dict().items():
        if name.startswith("vision_encoder.backbone."):
            origin = "detector_model." + name
        elif name.startswith("vision_encoder.neck."):
            origin = name.replace("vision_encoder.neck.", "tracker_neck.")
        else:
            origin = "tracker_model." + name
        assert torch.equal(tensor, source[origin]), name

    smaller = Sam3TrackerVideoRunner.load(
        "sam3_tracker", clip_settings(random_weights=False, models_dir=tmp_path, image_size=100)
    )
    assert (video_tracker.image_size, smaller.image_size) == (SIZE, 98)  # rounded down to a multiple of 14
    session = smaller.open(LoggedFrames(clip(3)))
    session.add(0, [Seed(1, box=BOX)])
    assert [t.masks.shape for t in session.propagate(0, 2)] == [(1, HEIGHT, WIDTH)] * 3
