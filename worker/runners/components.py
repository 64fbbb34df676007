"""Connected components for sam2's hole filling on machines without its compiled extension.

sam2 fills small holes and removes small specks of its masks (the image predictor's ``max_hole_area`` and
``max_sprinkle_area``, which ``SAM2AutomaticMaskGenerator`` sets from ``min_mask_region_area``; the video predictor's
``fill_hole_area``) with ``sam2._C.get_connected_componnets``, a CUDA kernel built only with ``SAM2_BUILD_CUDA=1``.
Without it sam2 warns and skips the step, so a CPU machine's masks differ from a GPU's. :func:`install` puts this
module's OpenCV implementation in its place when the extension does not import (it changes nothing when it does):
the same contract, so sam2's own post-processing runs unchanged on any device.
"""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import torch


def get_connected_componnets(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sam2's contract (its spelling kept): ``mask`` (N, 1, H, W) uint8, foreground non-zero → ``(labels, counts)``,
    both (N, 1, H, W) int32 on the mask's device: per foreground pixel its 8-connected component's label (from 1)
    and that component's area; 0 on the background."""
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (N, 1, H, W), got {tuple(mask.shape)}")
    planes = mask.detach().to("cpu", torch.uint8).numpy()
    labels = np.zeros(planes.shape, dtype=np.int32)
    counts = np.zeros(planes.shape, dtype=np.int32)
    for i, plane in enumerate(planes[:, 0]):
        _, plane_labels, stats, _ = cv2.connectedComponentsWithStats(
            (plane != 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
        )
        areas = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
        areas[0] = 0  # OpenCV's label 0 is the background
        labels[i, 0] = plane_labels
        counts[i, 0] = areas[plane_labels]
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)


def install() -> bool:
    """Make ``from sam2 import _C`` give this module's implementation when the compiled one does not import.
    Returns True when this module stands in for it."""
    existing = sys.modules.get("sam2._C")
    if existing is not None:
        return getattr(existing, "__samq_stand_in__", False) is True
    try:
        from sam2 import _C  # noqa: F401  (the compiled extension, where it was built)
    except ImportError:
        pass
    else:
        return False
    import sam2

    stand_in = types.ModuleType("sam2._C", __doc__)
    stand_in.get_connected_componnets = get_connected_componnets  # type: ignore[attr-defined]
    stand_in.__samq_stand_in__ = True  # type: ignore[attr-defined]
    sys.modules["sam2._C"] = stand_in
    sam2._C = stand_in
    return True
