"""A segment job's masks and scores are bit-identical to calling Meta's SAM2ImagePredictor directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask

from tests.support.images import b64, png_bytes, scene
from tests.support.stack import TEST_IMAGE_SIZE, Stack
from worker.torchvision_compat import install

PROMPTS: list[dict[str, Any]] = [
    {"points": [{"x": 120, "y": 118}]},
    {"points": [{"x": 250, "y": 60}, {"x": 20, "y": 200, "positive": False}]},
    {"box": {"x0": 60.5, "y0": 60, "x1": 200, "y1": 180.25}},
    {"points": [{"x": 128, "y": 120}], "box": {"x0": 60, "y0": 60, "x1": 200, "y1": 180}},
]


def reference_predictions(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """The reference library call, with the same seeded weights the worker builds (seed 0, SAMQ_IMAGE_SIZE)."""
    install()  # torchvision's CPU ops (see worker.torchvision_compat) before sam2 imports torchvision
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    size = TEST_IMAGE_SIZE
    torch.manual_seed(0)
    model = build_sam2(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        None,
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={size}"],
        apply_postprocessing=False,
    )
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    predictor.set_image(image)
    out = []
    for prompt in PROMPTS:
        points = prompt.get("points", [])
        box = prompt.get("box")
        masks, scores, _ = predictor.predict(
            point_coords=np.array([[p["x"], p["y"]] for p in points], dtype=np.float32) if points else None,
            point_labels=np.array([int(p.get("positive", True)) for p in points], dtype=np.int32) if points else None,
            box=np.array([box["x0"], box["y0"], box["x1"], box["y1"]], dtype=np.float32) if box else None,
            multimask_output=True,
        )
        best = int(np.argmax(scores))
        out.append((masks[best].astype(bool), float(scores[best])))
    return out


def test_segment_job_is_bit_identical_to_the_reference_predictor(local_stack: Stack) -> None:
    image = scene()
    job = local_stack.client.submit(
        {"type": "segment", "image": {"base64": b64(png_bytes(image))}, "prompts": PROMPTS}, wait=60
    )
    assert job["status"] == "succeeded", job["error"]
    instances = local_stack.client.result(job["id"])["instances"]

    expected = reference_predictions(image)
    assert len(instances) == len(expected)
    for instance, (mask, score) in zip(instances, expected, strict=True):
        reference_rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert instance["rle"] == {"size": reference_rle["size"], "counts": reference_rle["counts"].decode()}
        assert instance["score"] == score
        assert mask.any() or instance["area"] == 0
