"""The OpenCV stand-in for sam2's compiled connected components, against a flood fill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.runners import sam2_build
from worker.runners.components import get_connected_componnets


def flood_fill(plane: np.ndarray) -> np.ndarray:
    """8-connected labels of a small 2-D mask, by breadth-first search (0 on the background)."""
    labels = np.zeros(plane.shape, dtype=np.int64)
    height, width = plane.shape
    count = 0
    for start in zip(*np.nonzero(plane), strict=True):
        if labels[start]:
            continue
        count += 1
        labels[start], queue = count, [start]
        while queue:
            y, x = queue.pop()
            for ny in range(max(y - 1, 0), min(y + 2, height)):
                for nx in range(max(x - 1, 0), min(x + 2, width)):
                    if plane[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
    return labels


def test_labels_and_areas_are_the_8_connected_components() -> None:
    rng = np.random.default_rng(0)
    masks = torch.from_numpy((rng.random((4, 1, 40, 50)) > 0.55).astype(np.uint8))
    masks[3] = 0  # no foreground at all
    labels, counts = get_connected_componnets(masks)
    assert labels.shape == counts.shape == masks.shape and labels.dtype == counts.dtype == torch.int32
    for plane, plane_labels, plane_counts in zip(masks[:, 0].numpy(), labels[:, 0], counts[:, 0], strict=True):
        expected = flood_fill(plane)
        areas = np.bincount(expected.ravel())
        areas[0] = 0
        assert np.array_equal(plane_counts.numpy(), areas[expected])
        assert np.array_equal(plane_labels.numpy() > 0, expected > 0)
        for label in range(1, expected.max() + 1):  # the same partition, whatever the numbering
            assert len(np.unique(plane_labels.numpy()[expected == label])) == 1


def test_sam2_finds_it_where_its_extension_is_missing() -> None:
    from sam2 import _C

    assert sam2_build.has_connected_components()
    assert hasattr(_C, "get_connected_componnets")


def test_a_mask_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="N, 1, H, W"):
        get_connected_componnets(torch.zeros((2, 8, 8), dtype=torch.uint8))
