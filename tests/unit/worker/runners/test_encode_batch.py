"""``encode_batch`` of the three image runners against the libraries' own batched calls and the single ``encode``,
on images of different sizes, with seeded random weights at a shrunk input size (no weights, no network)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from worker.runners.concept import ConceptQuery, Sam3Embedding
from worker.runners.image import ImageEmbedding, VisualPrompt
from worker.runners.sam2_image import Sam2ImageRunner
from worker.runners.sam3_concept import Sam3ConceptRunner
from worker.runners.sam3_tracker import Sam3TrackerRunner
from worker.settings import WorkerSettings

pytestmark = [
    # sam2's SAM2Transforms scripts a module; torch 2.13 deprecates torch.jit.script (the runner silences this).
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

SAM2_SIZE = 256
SHAPES = [(120, 200), (90, 70), (150, 160)]  # (H, W): landscape, portrait, near-square
RTOL, ATOL = 1e-4, 1e-6
"""Batched vs single encode: rounding of batched kernels only (measured on CPU: 0 for SAM2, <= 2e-7 for SAM3). The
tracker's high-resolution maps are ~1e-4 in magnitude, so the tolerance is mostly relative."""


def _settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"random_weights": True, "device": "cpu", "seed": 0, "allow_download": False}
    values.update(overrides)
    return WorkerSettings(**values)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    images = []
    for height, width in SHAPES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (230, 40, 40)  # a flat red block
        images.append(image)
    return images


IMAGES = _images()


def _box(embedding: ImageEmbedding | Sam3Embedding) -> VisualPrompt:
    height, width = embedding.orig_hw
    return VisualPrompt(box=np.array([0.2 * width, 0.2 * height, 0.8 * width, 0.8 * height], np.float32))


def _maps(embedding: ImageEmbedding | Sam3Embedding) -> list[torch.Tensor]:
    if isinstance(embedding, Sam3Embedding):
        return list(embedding.fpn_hidden_states)
    return [embedding.features["image_embed"], *embedding.features["high_res_feats"]]


def _check_against_single(batched: list[Any], singles: list[Any]) -> None:
    """Same shapes, orig_hw and nbytes as the single encode, values equal up to rounding, no shared batch storage."""
    assert len(batched) == len(singles) == len(IMAGES)
    for image, ours, single in zip(IMAGES, batched, singles, strict=True):
        assert ours.orig_hw == single.orig_hw == image.shape[:2]
        assert ours.nbytes == single.nbytes
        for a, b in zip(_maps(ours), _maps(single), strict=True):
            assert a.shape == b.shape and a.shape[0] == 1
            assert a.dtype == b.dtype
            assert torch.allclose(a, b, rtol=RTOL, atol=ATOL), f"max diff {(a - b).abs().max().item()}"
            assert a.untyped_storage().nbytes() == a.numel() * a.element_size()  # a copy, not a view of the batch


def _check_refusals(runner: Sam2ImageRunner | Sam3ConceptRunner | Sam3TrackerRunner) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        runner.encode_batch([])
    with pytest.raises(ValueError, match=r"image 1 must be \(H, W, 3\) uint8"):
        runner.encode_batch([IMAGES[0], IMAGES[1][..., :2]])
    with pytest.raises(ValueError, match=r"image 0 must be \(H, W, 3\) uint8"):
        runner.encode_batch([IMAGES[0].astype(np.float32)])


# --- SAM2 ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2() -> Sam2ImageRunner:
    return Sam2ImageRunner.load("sam2.1_hiera_tiny", _settings(image_size=SAM2_SIZE))


@pytest.fixture(scope="module")
def sam2_batch(sam2: Sam2ImageRunner) -> list[ImageEmbedding]:
    return sam2.encode_batch(IMAGES)


@pytest.fixture(scope="module")
def sam2_singles(sam2: Sam2ImageRunner) -> list[ImageEmbedding]:
    return [sam2.encode(image) for image in IMAGES]


def test_sam2_batch_equals_meta_set_image_batch(sam2: Sam2ImageRunner, sam2_batch: list[ImageEmbedding]) -> None:
    predictor = sam2._predictor
    try:
        predictor.set_image_batch(list(IMAGES))  # as sam2's documentation calls it
        reference = predictor._features
        orig_hw = list(predictor._orig_hw)
        for i, ours in enumerate(sam2_batch):
            assert ours.orig_hw == tuple(orig_hw[i])
            theirs = [reference["image_embed"], *reference["high_res_feats"]]
            for a, b in zip(_maps(ours), theirs, strict=True):
                assert torch.equal(a, b[i : i + 1])
    finally:
        predictor.reset_predictor()


def test_sam2_batch_agrees_with_single_encodes(
    sam2_batch: list[ImageEmbedding], sam2_singles: list[ImageEmbedding]
) -> None:
    _check_against_single(sam2_batch, sam2_singles)


@pytest.mark.parametrize("multimask", [True, False])
def test_sam2_batch_embedding_predicts_the_single_embeddings_masks(
    sam2: Sam2ImageRunner, sam2_batch: list[ImageEmbedding], sam2_singles: list[ImageEmbedding], multimask: bool
) -> None:
    for ours, single in zip(sam2_batch, sam2_singles, strict=True):
        got = sam2.predict(ours, [_box(ours)], multimask, True)
        expected = sam2.predict(single, [_box(single)], multimask, True)
        assert got.masks.shape == (3 if multimask else 1, *single.orig_hw)
        assert np.array_equal(got.masks, expected.masks)
        assert got.masks.any() and not got.masks.all()
        np.testing.assert_allclose(got.scores, expected.scores, rtol=RTOL, atol=ATOL)


def test_sam2_batch_refuses_bad_input_and_leaves_the_predictor_clean(sam2: Sam2ImageRunner) -> None:
    _check_refusals(sam2)
    sam2.encode_batch(IMAGES[:1])
    assert not sam2._predictor._is_image_set and sam2._predictor._features is None


# --- SAM3 concept ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concept() -> Sam3ConceptRunner:
    return Sam3ConceptRunner.load("sam3", _settings())


@pytest.fixture(scope="module")
def concept_batch(concept: Sam3ConceptRunner) -> list[Sam3Embedding]:
    return concept.encode_batch(IMAGES)


def test_concept_batch_equals_transformers_batched_get_vision_features(
    concept: Sam3ConceptRunner, concept_batch: list[Sam3Embedding]
) -> None:
    pixel_values = concept._processor(images=list(IMAGES), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape[0] == len(IMAGES)
    with torch.inference_mode():
        reference = concept._model.get_vision_features(pixel_values=pixel_values).fpn_hidden_states
    for i, ours in enumerate(concept_batch):
        for a, b in zip(_maps(ours), reference, strict=True):
            assert torch.equal(a, b[i : i + 1])


def test_concept_batch_agrees_with_single_encodes_and_detects_the_same(
    concept: Sam3ConceptRunner, concept_batch: list[Sam3Embedding]
) -> None:
    singles = [concept.encode(image) for image in IMAGES]
    _check_against_single(concept_batch, singles)
    queries = [ConceptQuery("red car", threshold=0.0)]
    for ours, single in zip(concept_batch, singles, strict=True):
        got = concept.detect(ours, queries, max_detections=5, nms_iou=None)
        expected = concept.detect(single, queries, max_detections=5, nms_iou=None)
        assert len(got) == len(expected) == 5
        assert np.array_equal(got.masks, expected.masks)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=RTOL, atol=ATOL)


def test_concept_batch_refuses_bad_input(concept: Sam3ConceptRunner) -> None:
    _check_refusals(concept)


# --- SAM3 tracker ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracker() -> Sam3TrackerRunner:
    return Sam3TrackerRunner.load("sam3", _settings())


@pytest.fixture(scope="module")
def tracker_batch(tracker: Sam3TrackerRunner) -> list[ImageEmbedding]:
    return tracker.encode_batch(IMAGES)


def test_tracker_batch_equals_transformers_batched_get_image_embeddings(
    tracker: Sam3TrackerRunner, tracker_batch: list[ImageEmbedding]
) -> None:
    pixel_values = tracker._processor(images=list(IMAGES), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape[0] == len(IMAGES)
    with torch.inference_mode():
        reference = tracker._model.get_image_embeddings(pixel_values)  # high-res maps first, the embedding last
    for i, ours in enumerate(tracker_batch):
        theirs = [reference[-1], *reference[:-1]]
        for a, b in zip(_maps(ours), theirs, strict=True):
            assert torch.equal(a, b[i : i + 1])


def test_tracker_batch_agrees_with_single_encodes_and_predicts_the_same(
    tracker: Sam3TrackerRunner, tracker_batch: list[ImageEmbedding]
) -> None:
    singles = [tracker.encode(image) for image in IMAGES]
    _check_against_single(tracker_batch, singles)
    for ours, single in zip(tracker_batch, singles, strict=True):
        got = tracker.predict(ours, [_box(ours)], True, True)
        expected = tracker.predict(single, [_box(single)], True, True)
        assert np.array_equal(got.masks, expected.masks)
        assert got.masks.any() and not got.masks.all()
        np.testing.assert_allclose(got.scores, expected.scores, rtol=RTOL, atol=ATOL)


def test_tracker_batch_refuses_bad_input(tracker: Sam3TrackerRunner) -> None:
    _check_refusals(tracker)
