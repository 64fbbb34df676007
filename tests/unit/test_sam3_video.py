"""SAM3 video runners against transformers' documented whole-video calls, on shrunk seeded-random models.

Random weights give near-random masks, so every assertion is exact equality, shapes, dtypes or determinism. The
models run on one thread with denormals flushed (random weights breed denormals, which slow a CPU fifteenfold; and
the tiny models gain nothing from a second thread, which, when another process holds the other core, spins them to
a crawl); the references run in the same process, under the same settings.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError, PromptOutOfBoundsError
from tests.support.sam3_reference import (
    concept_video_model,
    continue_track_video,
    present_tracker_video,
    reference_concept_video,
    reference_track_video,
    reference_tracker_video,
)
from worker.runners import sam3_tracker_video
from worker.runners.sam3 import clip_tokenizer, image_processor, shrunk_video_config, video_processor
from worker.runners.sam3_concept_video import Sam3ConceptVideoRunner, Sam3ConceptVideoSession
from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner, Sam3TrackerVideoSession, memory_window
from worker.runners.video import FrameTracks, Seed
from worker.settings import WorkerSettings

from transformers import Sam3VideoModel, Sam3VideoProcessor  # isort: skip  (worker.runners.sam3 installs the shim)

pytestmark = pytest.mark.unit

SIZE = 112  # an 8x8 patch grid, 32x32 low-res masks
LENGTH = 24
HEIGHT, WIDTH = 72, 96
BOX = np.array([5.0, 10.0, 25.0, 30.0], np.float32)
POINT = np.array([[70.0, 50.0]], np.float32)
LATER = 7  # the frame the second object is seeded on
PHRASES = ["person", "car"]


@pytest.fixture(scope="module", autouse=True)
def one_thread_no_denormals() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "random_weights": True,
        "device": "cpu",
        "seed": 0,
        "allow_download": False,
        "image_size": SIZE,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def _clip(length: int = LENGTH) -> list[np.ndarray]:
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


def _seeds(session: Sam3TrackerVideoSession) -> list[FrameTracks]:
    """Object 1 boxed on frame 0, object 2 clicked on frame :data:`LATER` (before any propagation)."""
    return [
        session.add(0, [Seed(1, box=BOX)]),
        session.add(LATER, [Seed(2, point_coords=POINT, point_labels=np.array([1], np.int32))]),
    ]


REFERENCE_PROMPTS: list[tuple[int, int | list[int], dict[str, Any]]] = [
    (0, 1, {"input_boxes": [[BOX.tolist()]]}),
    (LATER, 2, {"input_points": [[POINT.tolist()]], "input_labels": [[[1]]]}),
]


def _equal(tracks: list[FrameTracks], reference: list[tuple[list[int], np.ndarray, np.ndarray]]) -> None:
    assert len(tracks) == len(reference)
    for got, (ids, masks, scores) in zip(tracks, reference, strict=True):
        assert got.obj_ids == ids
        assert np.array_equal(got.masks, masks)
        assert np.array_equal(got.scores, scores)


def _same(a: list[FrameTracks], b: list[FrameTracks]) -> None:
    assert [t.index for t in a] == [t.index for t in b]
    for x, y in zip(a, b, strict=True):
        assert (x.obj_ids, x.labels) == (y.obj_ids, y.labels)
        assert np.array_equal(x.masks, y.masks)
        assert np.array_equal(x.scores, y.scores)


@pytest.fixture(scope="module")
def tracker() -> Sam3TrackerVideoRunner:
    """The runner on the seeded random model with objects made present (see ``present_tracker_video``)."""
    return Sam3TrackerVideoRunner("sam3_tracker", *present_tracker_video(0, SIZE), "cpu")


@pytest.fixture(scope="module")
def tracked(tracker: Sam3TrackerVideoRunner) -> tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames]:
    """The two-object run through the whole clip; after every frame, what the session held."""
    frames = LoggedFrames(_clip())
    session = tracker.open(frames)
    _seeds(session)
    tracks, held = [], []
    for frame in session.propagate(0, LENGTH - 1):
        tracks.append(frame)
        held.append(_holdings(session._session))
    return tracks, held, frames


def _holdings(session: Any) -> dict[str, Any]:
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


# --- the tracker -----------------------------------------------------------------------------------------------------


def test_tracker_equals_the_whole_video_reference(tracked: tuple[list[FrameTracks], Any, Any]) -> None:
    tracks, _, _ = tracked
    model, processor = present_tracker_video(0, SIZE)
    _, reference = reference_track_video(model, processor, _clip(), REFERENCE_PROMPTS)
    _equal(tracks, reference)
    assert [t.index for t in tracks] == list(range(LENGTH))
    assert all(t.obj_ids == [1, 2] for t in tracks)  # object 2 is tracked from frame 0 on, as SAM2 does
    assert all(t.masks.shape == (2, HEIGHT, WIDTH) and t.masks.dtype == np.bool_ for t in tracks)
    assert all(t.scores.dtype == np.float32 and ((t.scores > 0) & (t.scores < 1)).all() for t in tracks)
    assert all(t.masks.any(axis=(1, 2)).all() for t in tracks)  # not vacuous: every object has a mask everywhere


def test_tracker_equals_the_reference_on_a_video_shorter_than_the_memory_window(
    tracker: Sam3TrackerVideoRunner,
) -> None:
    """Under 16 frames transformers' streaming mode scales the object pointers' temporal encoding by 15, its
    whole-video mode by ``length - 1``; the session runs the latter. (With random weights the pointers weigh so
    little that the two modes' masks agree here: this guards the short-video path, it cannot tell the modes apart.)
    """
    video = _clip(10)
    session = tracker.open(LoggedFrames(video))
    first = _seeds(session)
    tracks = list(session.propagate(0, 9))
    model, processor = present_tracker_video(0, SIZE)
    _, reference = reference_track_video(model, processor, video, REFERENCE_PROMPTS)
    _equal(tracks, reference)
    assert [(t.index, t.obj_ids) for t in first] == [(0, [1]), (LATER, [1, 2])]


def test_tracker_reads_frames_once_in_order_and_prunes(
    tracker: Sam3TrackerVideoRunner, tracked: tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames]
) -> None:
    _, held, frames = tracked
    window = memory_window(tracker._model.config)
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
    tracker: Sam3TrackerVideoRunner,
    tracked: tuple[list[FrameTracks], list[dict[str, Any]], LoggedFrames],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sam3_tracker_video, "prune", lambda *args: None)
    session = tracker.open(LoggedFrames(_clip()))
    _seeds(session)
    unpruned = list(session.propagate(0, LENGTH - 1))
    _same(unpruned, tracked[0])
    holding = _holdings(session._session)
    assert holding["pixels"] == LENGTH  # everything kept: the pruning above was real
    assert len(holding["other"][0]) == LENGTH - 1


def test_tracker_resumes_from_a_snapshot(
    tracker: Sam3TrackerVideoRunner, tracked: tuple[list[FrameTracks], Any, Any]
) -> None:
    uninterrupted, _, _ = tracked
    cut = 17  # past the memory window: the snapshot holds pruned state
    session = tracker.open(LoggedFrames(_clip()))
    _seeds(session)
    head = []
    for frame in session.propagate(0, LENGTH - 1):  # as the pipeline does: a snapshot between two frames
        head.append(frame)
        if frame.index == cut:
            state = session.snapshot()
            break
    payload = torch.load(io.BytesIO(state), weights_only=True)
    assert payload["last"] == cut and payload["video"] == [LENGTH, HEIGHT, WIDTH]

    fresh = Sam3TrackerVideoRunner("sam3_tracker", *present_tracker_video(0, SIZE), "cpu")  # another worker
    frames = LoggedFrames(_clip())
    resumed = fresh.resume(frames, state)
    with pytest.raises(ValueError, match=f"continues at frame {cut + 1}"):
        resumed.propagate(cut, LENGTH - 1)
    tail = [*resumed.propagate(cut + 1, 20), *resumed.propagate(21, LENGTH - 1)]
    _same(head + tail, uninterrupted)
    assert frames.reads == list(range(cut + 1, LENGTH))
    with pytest.raises(ValueError, match="snapshot is of 'sam3_tracker'"):
        fresh.resume(LoggedFrames(_clip(LENGTH - 1)), state)
    with pytest.raises(ValueError, match="not a SAM3 video session snapshot"):
        fresh.resume(frames, b"not a snapshot")


def test_reseeding_after_propagation_equals_the_reference(tracker: Sam3TrackerVideoRunner) -> None:
    """Object 1 corrected and object 3 added on frame 5, the frame last propagated, then tracking goes on."""
    video = _clip(12)
    boxes = [[6.0, 14.0, 36.0, 36.0], [55.0, 38.0, 78.0, 62.0]]
    session = tracker.open(LoggedFrames(video))
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
    _equal(tracks, reference)
    assert tracks[-1].obj_ids == [1, 3]
    assert session._session.output_dict_per_obj[0]["cond_frame_outputs"].keys() == {0}  # a correction, not a condition


def test_many_seeded_frames_equal_the_reference(tracker: Sam3TrackerVideoRunner) -> None:
    """One object boxed on six frames: more conditioning frames than the 4 a frame attends to. Once the oldest are
    out of the window too, the session drops their memory (keeping their object pointers)."""
    seeded = range(6)
    session = tracker.open(LoggedFrames(_clip()))
    boxes = [BOX + np.float32(2 * i) for i in seeded]
    for i, box in zip(seeded, boxes, strict=True):
        session.add(i, [Seed(1, box=box)])
    tracks = list(session.propagate(0, LENGTH - 1))
    model, processor = present_tracker_video(0, SIZE)
    prompts: list[tuple[int, int | list[int], dict[str, Any]]] = [
        (i, 1, {"input_boxes": [[box.tolist()]]}) for i, box in zip(seeded, boxes, strict=True)
    ]
    _, reference = reference_track_video(model, processor, _clip(), prompts)
    _equal(tracks, reference)
    cond = session._session.output_dict_per_obj[0]["cond_frame_outputs"]
    assert {frame: "maskmem_features" in out for frame, out in cond.items()} == {i: i >= 2 for i in seeded}


def test_tracker_snapshot_is_compact(tracker: Sam3TrackerVideoRunner) -> None:
    session = tracker.open(LoggedFrames(_clip(4)))
    session.add(0, [Seed(1, box=BOX), Seed(2, point_coords=POINT, point_labels=np.array([1], np.int32))])
    list(session.propagate(0, 3))
    payload = torch.load(io.BytesIO(session.snapshot()), weights_only=True)
    assert set(payload["session"]) == set(sam3_tracker_video.TRACKER_STATE)
    outputs = payload["session"]["output_dict_per_obj"]
    tensors = [t for o in outputs.values() for kind in o.values() for out in kind.values() for t in out.values()]
    # both objects' memories were encoded as one batch: each saved slice holds its own values only
    assert tensors and all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)
    assert max(t.numel() for t in tensors) == 64 * 64  # an 8x8 memory of 64 channels: no masks, no pixels


def test_tracker_refusals(tracker: Sam3TrackerVideoRunner) -> None:
    with pytest.raises(ModelUnavailableError, match="the SAM3 video tracker is 'sam3_tracker'"):
        Sam3TrackerVideoRunner.load("sam3", _settings())
    with pytest.raises(ValueError, match="text concepts"):
        tracker.open(LoggedFrames(_clip(3)), ["person"])
    with pytest.raises(ValueError, match="no frames"):
        tracker.open(LoggedFrames([]))
    session = tracker.open(LoggedFrames(_clip(3)))
    with pytest.raises(ValueError, match="nothing to track"):
        session.propagate(0, 2)
    with pytest.raises(PromptOutOfBoundsError, match="prompt 0: box"):
        session.add(0, [Seed(1, box=np.array([0.0, 0.0, WIDTH + 1.0, 5.0], np.float32))])
    with pytest.raises(ValueError, match="one seed per object"):
        session.add(0, [Seed(1, box=BOX), Seed(1, box=BOX)])
    with pytest.raises(ValueError, match="outside the video's 3 frames"):
        session.add(3, [Seed(1, box=BOX)])


def test_tracker_load_builds_the_seeded_model() -> None:
    runner = Sam3TrackerVideoRunner.load("sam3_tracker", _settings())
    reference, _ = reference_tracker_video(0, SIZE)
    expected = reference.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in runner._model.state_dict().items())
    assert (runner.model_id, runner.device, runner.image_size) == ("sam3_tracker", "cpu", SIZE)


# --- concepts --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concept() -> Sam3ConceptVideoRunner:
    """The runner on a seeded random model that finds something (see ``concept_video_model``)."""
    return Sam3ConceptVideoRunner("sam3", *concept_video_model(0, SIZE), "cpu")


@pytest.fixture(scope="module")
def concept_run(concept: Sam3ConceptVideoRunner) -> tuple[list[FrameTracks], list[dict[str, Any]]]:
    """Both phrases through a 20-frame clip; after every frame, what the session held."""
    session = concept.open(LoggedFrames(_clip(20)), PHRASES)
    tracks, held = [], []
    for frame in session.propagate(0, 19):
        tracks.append(frame)
        inner = session._session
        held.append(
            {
                **_holdings(inner),
                "by_frame": len(inner.obj_id_to_tracker_score_frame_wise) + len(inner.suppressed_obj_ids),
                "evidence": max((len(v) for v in inner.unmatched_frame_inds.values()), default=0),
            }
        )
    return tracks, held


def test_concept_equals_the_whole_video_reference(concept_run: tuple[list[FrameTracks], Any]) -> None:
    tracks_per_frame, _ = concept_run
    reference = reference_concept_video(*concept_video_model(0, SIZE), _clip(20), PHRASES)
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
    concept: Sam3ConceptVideoRunner, concept_run: tuple[list[FrameTracks], Any]
) -> None:
    tracks_per_frame, _ = concept_run
    again = list(concept.open(LoggedFrames(_clip(20)), PHRASES).propagate(0, 19))
    _same(again, tracks_per_frame)
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


def test_concept_session_prunes(concept: Sam3ConceptVideoRunner, concept_run: tuple[Any, list[dict[str, Any]]]) -> None:
    _, held = concept_run
    window = memory_window(concept._model.tracker_model.config)
    delay = concept._model.hotstart_delay
    for holding in held:
        assert holding["pixels"] == 0
        assert all(len(other) <= window for other in holding["other"].values())
        assert holding["other_keys"] <= {"object_pointer", "object_score_logits", "maskmem_features", "maskmem_pos_enc"}
        assert holding["by_frame"] <= 2  # the last frame's scores and suppressions only
        assert holding["evidence"] <= delay  # hotstart evidence of tracks still in their hotstart period only


def test_concept_resumes_mid_hotstart(
    concept: Sam3ConceptVideoRunner, concept_run: tuple[list[FrameTracks], Any]
) -> None:
    uninterrupted, _ = concept_run
    cut = 3
    session = concept.open(LoggedFrames(_clip(20)), PHRASES)
    head = list(session.propagate(0, 1))  # chunks change nothing: frame 1 is held back until frame 15 is processed
    for tracks in session.propagate(2, 19):
        head.append(tracks)
        if tracks.index == cut:
            state = session.snapshot()
            break
    payload = torch.load(io.BytesIO(state), weights_only=True)
    assert (payload["next"], payload["processed"], len(payload["held"])) == (cut + 1, cut + 14, 14)

    frames = LoggedFrames(_clip(20))
    resumed = Sam3ConceptVideoRunner("sam3", *concept_video_model(0, SIZE), "cpu").resume(frames, state)
    _same(head + list(resumed.propagate(cut + 1, 19)), uninterrupted)
    assert frames.reads == [18, 19]  # frames up to 17 were processed before the snapshot: their outputs were held


def test_concept_refusals(concept: Sam3ConceptVideoRunner, tracker: Sam3TrackerVideoRunner) -> None:
    frames = LoggedFrames(_clip(3))
    with pytest.raises(ValueError, match="at least one phrase"):
        concept.open(frames)
    with pytest.raises(ValueError, match="blank"):
        concept.open(frames, ["person", " "])
    with pytest.raises(ValueError, match="cannot be re-seeded"):
        concept.open(frames, PHRASES, reseeding=True)
    session = concept.open(frames, PHRASES)
    assert isinstance(session, Sam3ConceptVideoSession)
    with pytest.raises(ValueError, match="not seeded"):
        session.add(0, [Seed(1, box=BOX)])
    list(session.propagate(0, 1))
    with pytest.raises(ValueError, match="continues at frame 2"):
        session.propagate(0, 2)
    with pytest.raises(ValueError, match="this session is 'sam3' at"):
        concept.resume(frames, tracker.open(frames).snapshot())


def test_concept_runner_with_random_weights_finds_nothing_deterministically() -> None:
    runner = Sam3ConceptVideoRunner.load("sam3", _settings())
    assert (runner.model_id, runner.image_size) == ("sam3", SIZE)
    runs = [list(runner.open(LoggedFrames(_clip(3)), PHRASES).propagate(0, 2)) for _ in range(2)]
    _same(*runs)
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
    settings = _settings(random_weights=False, models_dir=tmp_path, image_size=None)
    concept = Sam3ConceptVideoRunner.load("sam3", settings)
    source = saved.state_dict()
    assert all(torch.equal(tensor, source[name]) for name, tensor in concept._model.state_dict().items())

    tracker = Sam3TrackerVideoRunner.load("sam3_tracker", settings)
    for name, tensor in tracker._model.state_dict().items():
        if name.startswith("vision_encoder.backbone."):
            origin = "detector_model." + name
        elif name.startswith("vision_encoder.neck."):
            origin = name.replace("vision_encoder.neck.", "tracker_neck.")
        else:
            origin = "tracker_model." + name
        assert torch.equal(tensor, source[origin]), name

    smaller = Sam3TrackerVideoRunner.load(
        "sam3_tracker", _settings(random_weights=False, models_dir=tmp_path, image_size=100)
    )
    assert (tracker.image_size, smaller.image_size) == (SIZE, 98)  # rounded down to a multiple of 14
    session = smaller.open(LoggedFrames(_clip(3)))
    session.add(0, [Seed(1, box=BOX)])
    assert [t.masks.shape for t in session.propagate(0, 2)] == [(1, HEIGHT, WIDTH)] * 3
