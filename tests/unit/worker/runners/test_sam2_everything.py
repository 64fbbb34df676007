"""Segment everything against Meta's ``SAM2AutomaticMaskGenerator`` called directly (seeded random weights, shrunk
input): the same masks bit for bit, the same scores, boxes, points and crops, in the same order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from worker.runners.sam2_everything import GeneratedMasks, GeneratorParams, Sam2EverythingRunner
from worker.runners.sam2_image import Sam2ImageRunner
from worker.settings import WorkerSettings

MODEL = "sam2.1_hiera_tiny"
SIZE = 256
# Random weights predict low IoUs, logits near zero (unstable masks) and masks covering most of the image, so the
# library's thresholds keep nothing and its NMS one mask. These keep many candidates (an NMS threshold of 1 drops
# none), so that order, filters and crops are all exercised.
KEEP_MANY: dict[str, Any] = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
PARAMETER_SETS = {
    "one layer, every filter open": GeneratorParams(points_per_side=8, **KEEP_MANY),
    "crop layer 1, fewer points per crop": GeneratorParams(
        points_per_side=8,
        points_per_batch=16,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        crop_nms_thresh=0.7,
        **KEEP_MANY,
    ),
    "holes and specks removed, m2m": GeneratorParams(
        points_per_side=8, points_per_batch=24, min_mask_region_area=40, use_m2m=True, **KEEP_MANY
    ),
    "stability filter and offset": GeneratorParams(
        points_per_side=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.9,
        stability_score_offset=0.01,
        box_nms_thresh=1.0,
        multimask_output=False,
    ),
}


@pytest.fixture(scope="module")
def image_runner() -> Sam2ImageRunner:
    settings = WorkerSettings(random_weights=True, image_size=SIZE, device="cpu", seed=0, allow_download=False)
    return Sam2ImageRunner.load(MODEL, settings)


@pytest.fixture
def local_masks(image_runner: Sam2ImageRunner) -> Iterator[None]:
    """Random weights give every point the same whole-image mask; this hook on the mask decoder (the same model
    serves both generators) raises each candidate's logits inside a rectangle of its own and lowers them outside,
    so that masks have boxes of all sizes, crops keep masks of their own, and filters and NMS have work to do."""

    def localize(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
        low, *rest = output
        n, c, h, w = low.shape
        ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
        shift = torch.full_like(low, -3.0)
        for b in range(n):
            for k in range(c):
                cy, cx, half = (b * 53 + k * 17) % h, (b * 37 + k * 29) % w, 12 + (b * 7 + k * 5) % 40
                inside = ((ys - cy).abs() < half) & ((xs - cx).abs() < half)
                shift[b, k][inside] = 3.0
        return (low + shift, *rest)

    handle = image_runner._predictor.model.sam_mask_decoder.register_forward_hook(localize)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 80, (180, 240, 3), dtype=np.uint8)
    picture[30:90, 40:120] = (220, 40, 40)
    picture[100:170, 130:220] = (30, 200, 90)
    cv2.circle(picture, (190, 50), 30, (240, 240, 30), -1)
    return picture


def reference(runner: Sam2ImageRunner, image: np.ndarray, params: GeneratorParams) -> list[dict[str, Any]]:
    """Meta's generator on the same model, as its documentation calls it (COCO RLE output)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(runner._predictor.model, output_mode="coco_rle", **asdict(params))
    generator.predictor._bb_feat_sizes = runner._predictor._bb_feat_sizes  # the shrunk build's feature sizes
    return list(generator.generate(image))


def assert_same(ours: GeneratedMasks, anns: list[dict[str, Any]]) -> None:
    assert len(ours.rles) == len(anns)
    for i, ann in enumerate(anns):
        assert ours.rles[i] == ann["segmentation"], f"mask {i}"
        x0, y0, x1, y1 = ours.boxes[i].tolist()
        assert [x0, y0, x1 - x0, y1 - y0] == ann["bbox"], f"box {i}"
        assert float(ours.predicted_iou[i]) == ann["predicted_iou"]
        assert float(ours.stability_score[i]) == ann["stability_score"]
        assert [ours.point_coords[i].tolist()] == ann["point_coords"]
        cx0, cy0, cx1, cy1 = ours.crop_boxes[i].tolist()
        assert [cx0, cy0, cx1 - cx0, cy1 - cy0] == ann["crop_box"]


@pytest.mark.usefixtures("local_masks")
@pytest.mark.parametrize("name", list(PARAMETER_SETS))
def test_masks_scores_and_boxes_equal_the_generators(
    image_runner: Sam2ImageRunner, image: np.ndarray, name: str
) -> None:
    params = PARAMETER_SETS[name]
    ours = Sam2EverythingRunner(image_runner, chunk=5).generate(image, params)
    anns = reference(image_runner, image, params)
    assert len(anns) >= 10, "a comparison of nothing proves nothing"
    assert_same(ours, anns)
    if params.crop_n_layers:
        assert len({tuple(box) for box in ours.crop_boxes.tolist()}) > 1, "masks from the crops too"


def test_the_chunk_size_and_a_cached_embedding_change_nothing(image_runner: Sam2ImageRunner, image: np.ndarray) -> None:
    params = PARAMETER_SETS["crop layer 1, fewer points per crop"]
    whole = Sam2EverythingRunner(image_runner, chunk=1000).generate(image, params)
    cached = Sam2EverythingRunner(image_runner, chunk=1).generate(image, params, image_runner.encode(image))
    assert whole.rles == cached.rles
    assert np.array_equal(whole.boxes, cached.boxes) and np.array_equal(whole.predicted_iou, cached.predicted_iou)


def test_min_mask_region_area_fills_holes_and_removes_specks_on_cpu(
    image_runner: Sam2ImageRunner, image: np.ndarray
) -> None:
    """Without sam2's CUDA extension, sam2 only warns and skips this step; ``worker.runners.components`` stands in."""
    params = PARAMETER_SETS["holes and specks removed, m2m"]
    cleaned = Sam2EverythingRunner(image_runner, chunk=8).generate(image, params)
    raw = Sam2EverythingRunner(image_runner, chunk=8).generate(
        image, GeneratorParams(**{**asdict(params), "min_mask_region_area": 0})
    )
    assert cleaned.rles != raw.rles


def test_no_mask_at_the_librarys_defaults_is_an_empty_result_with_crops_too(
    image_runner: Sam2ImageRunner, image: np.ndarray
) -> None:
    """The library itself fails here with crop layers (its crop NMS indexes a (0,) tensor); the runner does not."""
    for params in (GeneratorParams(points_per_side=4), GeneratorParams(points_per_side=4, crop_n_layers=1)):
        got = Sam2EverythingRunner(image_runner, chunk=8).generate(image, params)
        assert got.rles == [] and got.boxes.shape == (0, 4) and got.crop_boxes.shape == (0, 4)


def test_progress_counts_point_batches_and_a_raise_between_them_stops_the_run(
    image_runner: Sam2ImageRunner, image: np.ndarray
) -> None:
    params = GeneratorParams(points_per_side=6, points_per_batch=16, crop_n_layers=1, **KEEP_MANY)
    runner = Sam2EverythingRunner(image_runner, chunk=8)
    assert runner.batches((180, 240), params) == 3 + 4 * 3  # 36 points: 3 batches, on the image and each crop
    seen: list[tuple[int, int]] = []
    runner.generate(image, params, between=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 15) for i in range(1, 16)]

    class Stop(Exception):
        pass

    calls = []

    def stop_at_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        runner.generate(image, params, between=stop_at_two)
    assert calls == [1, 2]
