"""Meta's SAM2 image predictor, called directly with the seeded random weights the test stack's workers build."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from tests.support.stack import TEST_IMAGE_SIZE
from worker.torchvision_compat import install


def reference_model() -> Any:
    """Meta's SAM2 tiny built as the test stack's workers build it (seed 0, ``SAMQ_IMAGE_SIZE``), by sam2 itself."""
    install()  # torchvision's CPU ops (see worker.torchvision_compat) before sam2 imports torchvision
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    with warnings.catch_warnings():  # sam2 scripts a module; torch 2.13 deprecates torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        return build_sam2(
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            None,
            device="cpu",
            mode="eval",
            hydra_overrides_extra=[f"++model.image_size={TEST_IMAGE_SIZE}"],
            apply_postprocessing=False,
        )


def feature_sizes() -> list[tuple[int, int]]:
    """The predictor's backbone feature sizes at the shrunk ``SAMQ_IMAGE_SIZE`` (sam2 hard-codes 1024's)."""
    size = TEST_IMAGE_SIZE
    return [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]


def reference_predictions(image: np.ndarray, prompts: list[dict[str, Any]]) -> list[tuple[np.ndarray, float]]:
    """The reference library call, with the same seeded weights the worker builds: the best mask and score of each
    of ``prompts`` (samq's prompt JSON; ``{}`` calls the predictor with no prompt)."""
    install()  # the predictor's module imports torchvision too
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(reference_model())
    predictor._bb_feat_sizes = feature_sizes()
    predictor.set_image(image)
    out = []
    for prompt in prompts:
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


def reference_everything(image: np.ndarray, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Meta's ``SAM2AutomaticMaskGenerator(model, **params).generate(image)`` with COCO RLE output, on the seeded
    model. sam2's hole filling (``min_mask_region_area``) needs its CUDA extension; the worker's OpenCV stand-in
    (``worker.runners.components``) is installed for the reference too."""
    from worker.runners.components import install as install_components

    install()
    install_components()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(reference_model(), output_mode="coco_rle", **params)
    generator.predictor._bb_feat_sizes = feature_sizes()
    return list(generator.generate(image))
