"""Make ``import torchvision`` work when its compiled ops cannot load (a CUDA wheel beside a CPU torch).

No CPU build of torchvision 0.28 exists on our package index, so a CPU machine gets the CUDA wheel, whose ``_C``
extension needs ``libc10_cuda.so`` and fails to load. torchvision then dies at import time, because
``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` whether or not
the ops exist (``RuntimeError: operator torchvision::nms does not exist``). The sam2 image predictor imports
torchvision at import time, so this matters.

:func:`install` (call it before torchvision is first imported) first tries to load the native ``_C`` exactly as
torchvision would. If that works it does nothing more. Otherwise it defines the two operator schemas itself,
registers a pure-torch greedy NMS kernel for them, imports torchvision, and lets ``torchvision.ops.nms`` (and so
``batched_nms``) through torchvision's "are the C++ ops loaded?" guard in ``torchvision.ops.boxes``. Other compiled
ops (``roi_pool``, ``deform_conv2d``, ...) stay unavailable (``box_iou_rotated`` now fails with an AttributeError
instead of torchvision's message); ``roi_align`` uses torchvision's own Python fallback.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
from typing import Literal

import torch

logger = logging.getLogger(__name__)

ShimState = Literal["not_installed", "native", "shim", "absent"]

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


class _Installation:
    """Process-wide record of what :func:`install` did."""

    def __init__(self) -> None:
        self.state: ShimState = "not_installed"
        # The Library object owns the registrations: it must live as long as the process.
        self.library: torch.library.Library | None = None


_installation = _Installation()


def state() -> ShimState:
    """What :func:`install` found: native ops, the pure-torch shim, no torchvision at all, or not run yet."""
    return _installation.state


def install() -> None:
    """Ensure ``torchvision`` imports and ``torchvision.ops.nms`` works. Idempotent; cheap after the first call."""
    if _installation.state == "not_installed":
        _installation.state = _install()


def _install() -> ShimState:
    if _nms_op_exists():
        return "native"
    if importlib.util.find_spec("torchvision") is None:
        return "absent"
    extension = _find_extension()
    if extension is not None and _native_ops_load(extension):
        return "native"
    _install_shim()
    return "shim"


def nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS in plain torch, with the semantics of torchvision's CPU kernel.

    Boxes are XYXY. Candidates are visited by decreasing score (stable on ties); a box is dropped when its IoU with
    an already kept box is strictly greater than ``iou_threshold``. Returns int64 indices of the kept boxes, by
    decreasing score, on the boxes' device. IoU is computed in the boxes' own dtype with the C++ kernel's formula
    and order of operations.
    """
    if dets.dim() != 2 or dets.size(1) != 4:
        raise RuntimeError(f"boxes should be a 2d tensor with 4 columns, got shape {tuple(dets.shape)}")
    if scores.dim() != 1 or scores.size(0) != dets.size(0):
        raise RuntimeError("boxes and scores should have the same number of elements in dimension 0")
    count = dets.size(0)
    if count == 0:
        return torch.empty((0,), dtype=torch.int64, device=dets.device)
    order = torch.sort(scores, stable=True, descending=True).indices
    boxes = dets[order]
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(count, dtype=torch.bool, device=dets.device)
    keep: list[int] = []
    for i in range(count):
        if bool(suppressed[i]):
            continue
        keep.append(i)
        if i + 1 == count:
            break
        width = (torch.minimum(x2[i], x2[i + 1 :]) - torch.maximum(x1[i], x1[i + 1 :])).clamp(min=0)
        height = (torch.minimum(y2[i], y2[i + 1 :]) - torch.maximum(y1[i], y1[i + 1 :])).clamp(min=0)
        inter = width * height
        iou = inter / (areas[i] + areas[i + 1 :] - inter)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=dets.device)]


def _qnms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # torchvision passes the integer representations of quantized tensors.
    return nms_reference(dets.to(torch.float32), scores.to(torch.float32), iou_threshold)


def _nms_op_exists() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute lookup resolves the registered operator
    except (AttributeError, RuntimeError):
        return False
    return True


def _find_extension() -> str | None:
    """Path of torchvision's compiled ``_C`` extension, found the way torchvision finds it, without importing it."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    loader_details = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for location in spec.submodule_search_locations:
        found = importlib.machinery.FileFinder(location, loader_details).find_spec("_C")
        if found is not None and found.origin is not None:
            return found.origin
    return None


def _native_ops_load(path: str) -> bool:
    try:
        torch.ops.load_library(path)  # type: ignore[no-untyped-call]
    except (OSError, RuntimeError) as e:
        logger.info("torchvision compiled ops do not load (%s); using the pure-torch NMS shim", e)
        return False
    return _nms_op_exists()


def _install_shim() -> None:
    if not torch.cuda.is_available():
        # roi_align's Python fallback is wrapped in torch.compile, which costs ~15 s per shape on CPU.
        os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
    if not _nms_op_exists():
        # torch.library is not annotated, hence the ignores.
        library = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
        library.define("nms" + _NMS_SCHEMA)  # type: ignore[no-untyped-call]
        library.define("qnms" + _NMS_SCHEMA)  # type: ignore[no-untyped-call]
        for dispatch_key in ("CPU", "CUDA"):
            library.impl("nms", nms_reference, dispatch_key)  # type: ignore[no-untyped-call]
        library.impl("qnms", _qnms_reference, "CPU")  # type: ignore[no-untyped-call]
        _installation.library = library
    # torchvision now imports; its nms() still refuses to run because the C++ library did not load, so let the
    # box ops through that guard (they only need the two operators defined above).
    import torchvision.ops.boxes

    torchvision.ops.boxes._assert_has_ops = _box_ops_available


def _box_ops_available() -> None:
    """Stand-in for torchvision's ``_assert_has_ops`` in ``torchvision.ops.boxes``: nms and qnms are defined."""
