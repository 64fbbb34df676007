from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from worker import torchvision_compat


def _brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    rows = boxes.tolist()
    order = sorted(range(len(rows)), key=lambda i: -float(scores[i]))

    def iou(a: list[float], b: list[float]) -> float:
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    kept: list[int] = []
    for i in order:
        if all(iou(rows[i], rows[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def _random_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator) * 100
    wh = torch.rand(count, 2, generator=generator) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(count, generator=generator)


@pytest.fixture(scope="module")
def torchvision_module():
    torchvision_compat.install()
    import torchvision

    return torchvision


@pytest.mark.parametrize(("count", "threshold", "seed"), [(1, 0.5, 0), (50, 0.5, 1), (300, 0.3, 2), (300, 0.7, 3)])
def test_nms_matches_brute_force(torchvision_module, count: int, threshold: float, seed: int) -> None:
    boxes, scores = _random_boxes(count, seed)
    keep = torchvision_module.ops.nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _brute_force_nms(boxes, scores, threshold)


def test_nms_empty_input(torchvision_module) -> None:
    keep = torchvision_module.ops.nms(torch.zeros((0, 4)), torch.zeros((0,)), 0.5)
    assert keep.shape == (0,)
    assert keep.dtype == torch.int64


def test_nms_reference_is_stable_on_tied_scores() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert torchvision_compat.nms_reference(boxes, scores, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("count", [200, 2000])  # 2000 boxes takes torchvision's per-class ("vanilla") path
def test_batched_nms_is_per_class(torchvision_module, count: int) -> None:
    boxes, scores = _random_boxes(count, 7)
    classes = torch.arange(count) % 3
    keep = torchvision_module.ops.batched_nms(boxes, scores, classes, 0.5)
    expected: list[int] = []
    for label in range(3):
        members = torch.nonzero(classes == label).flatten()
        expected += members[_brute_force_nms(boxes[members], scores[members], 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_install_in_a_fresh_process_before_torchvision() -> None:
    script = textwrap.dedent(
        """
        import os, sys
        os.environ.pop("TORCH_COMPILE_DISABLE", None)
        from worker import torchvision_compat
        assert "torchvision" not in sys.modules
        torchvision_compat.install()
        torchvision_compat.install()
        import torch, torchvision
        keep = torchvision.ops.nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]), 0.5)
        assert keep.tolist() == [0], keep
        print(torchvision_compat.state(), os.environ.get("TORCH_COMPILE_DISABLE"))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    state, compile_disable = result.stdout.split()
    assert state in {"native", "shim"}
    if state == "shim" and not torch.cuda.is_available():
        assert compile_disable == "1"
