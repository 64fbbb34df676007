"""Meta's SAM2 image predictor, called directly with the seeded random weights the test stack's workers build."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from tests.support.stack import TEST_IMAGE_SIZE
from worker.torchvision_compat import install


def reference_predictions(image: np.ndarray, prompts: list[dict[str, Any]]) -> list[tuple[np.ndarray, float]]:
    """The reference library call, with the same seeded weights the worker builds (seed 0, SAMQ_IMAGE_SIZE): the
    best mask and score of each of ``prompts`` (samq's prompt JSON; ``{}`` calls the predictor with no prompt)."""
    install()  # torchvision's CPU ops (see worker.torchvision_compat) before sam2 imports torchvision
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    size = TEST_IMAGE_SIZE
    torch.manual_seed(0)
    with warnings.catch_warnings():  # sam2 scripts a module; torch 2.13 deprecates torch.jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
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
