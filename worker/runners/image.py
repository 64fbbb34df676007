"""The image runner contract: what the pipeline asks of a model on single images, and the data it passes.

An image runner encodes an image once (``encode`` → an :class:`ImageEmbedding`, cacheable in process or, as bytes,
in shared storage) and decodes any number of :class:`VisualPrompt` against it (``predict`` →
:class:`~worker.results.InstanceMasks`). ``Sam2ImageRunner`` (``worker.runners.sam2_image``) and
``Sam3TrackerRunner`` (``worker.runners.sam3_tracker``) implement it; the prompt checks here are theirs to share.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from tasks.errors import PromptOutOfBoundsError
from worker.results import InstanceMasks


class Embedding(Protocol):
    """What every image embedding offers (``ImageEmbedding``, ``Sam3Embedding``)."""

    @property
    def orig_hw(self) -> tuple[int, int]: ...

    @property
    def nbytes(self) -> int: ...

    def to_bytes(self) -> bytes: ...


E_co = TypeVar("E_co", bound=Embedding, covariant=True)


class Encoder(Protocol[E_co]):
    """The image encoder side of a runner: its input size, device, and one image → one embedding."""

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> str: ...

    def encode(self, image: npt.NDArray[np.uint8]) -> E_co: ...

    def encode_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> Sequence[E_co]: ...


POINT_LABELS = (0, 1)
"""0: background (negative) point, 1: foreground (positive) point."""


class Sam2Features(TypedDict):
    """The predictor's per-image features: the 1/16 embedding and the 1/4 and 1/8 high-resolution maps."""

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor]


@dataclass(frozen=True)
class ImageEmbedding:
    """One image's encoder output, enough to decode prompts without the image. ``nbytes``: tensor memory."""

    features: Sam2Features
    orig_hw: tuple[int, int]
    nbytes: int

    @classmethod
    def create(cls, features: Sam2Features, orig_hw: tuple[int, int]) -> ImageEmbedding:
        tensors = [features["image_embed"], *features["high_res_feats"]]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        return cls(features=features, orig_hw=(int(orig_hw[0]), int(orig_hw[1])), nbytes=nbytes)

    def to_bytes(self) -> bytes:
        """Serialize (CPU copies of) the tensors with ``torch.save``, for the shared cache tier."""
        payload = {
            "image_embed": self.features["image_embed"].detach().cpu(),
            "high_res_feats": [t.detach().cpu() for t in self.features["high_res_feats"]],
            "orig_hw": list(self.orig_hw),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device | str = "cpu") -> ImageEmbedding:
        """Inverse of :meth:`to_bytes` (``weights_only`` loading: no code runs). ``ValueError`` if unreadable."""
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            image_embed = payload["image_embed"]
            high_res_feats = list(payload["high_res_feats"])
            height, width = (int(v) for v in payload["orig_hw"])
        except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a serialized image embedding: {e}") from e
        if not isinstance(image_embed, torch.Tensor) or not all(isinstance(t, torch.Tensor) for t in high_res_feats):
            raise ValueError("not a serialized image embedding: tensors expected")
        features: Sam2Features = {
            "image_embed": image_embed.to(device),
            "high_res_feats": [t.to(device) for t in high_res_feats],
        }
        return cls.create(features, (height, width))


@dataclass(frozen=True)
class VisualPrompt:
    """One instance to segment, in original-image pixels. With no field set it asks for the model's most prominent
    mask (the prediction with no prompt at all).

    - ``point_coords``: (K, 2) float32 ``(x, y)``; ``point_labels``: (K,) int32, 1 foreground / 0 background.
    - ``box``: (4,) float32 XYXY.
    - ``mask_input``: (1, r, r) float32 low-res logits from an earlier prediction (``InstanceMasks.low_res_logits``).
    """

    point_coords: npt.NDArray[np.float32] | None = None
    point_labels: npt.NDArray[np.int32] | None = None
    box: npt.NDArray[np.float32] | None = None
    mask_input: npt.NDArray[np.float32] | None = None


def check_images(images: Sequence[npt.NDArray[np.uint8]]) -> None:
    """A batch to encode: at least one image, each (H, W, 3) uint8 RGB (shared by the image runners)."""
    if not images:
        raise ValueError("at least one image is needed")
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index} must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")


def check_prompt(index: int, prompt: VisualPrompt, height: int, width: int, low_res_size: int) -> None:
    """A prompt's shape and bounds (shared by the SAM2 and SAM3 tracker runners)."""
    if (prompt.point_coords is None) != (prompt.point_labels is None):
        raise ValueError(f"prompt {index}: point_coords and point_labels go together")
    if prompt.point_coords is not None and prompt.point_labels is not None:
        _check_points(index, prompt.point_coords, prompt.point_labels, height, width)
    if prompt.box is not None:
        check_box(index, prompt.box, height, width)
    if prompt.mask_input is not None and prompt.mask_input.shape != (1, low_res_size, low_res_size):
        side = low_res_size
        raise ValueError(
            f"prompt {index}: mask_input must be (1, {side}, {side}) for this model, got {prompt.mask_input.shape}"
        )


def _check_points(
    index: int, coords: npt.NDArray[np.float32], labels: npt.NDArray[np.int32], height: int, width: int
) -> None:
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0 or labels.shape != coords.shape[:1]:
        raise ValueError(
            f"prompt {index}: point_coords must be (K, 2) and point_labels (K,), got {coords.shape} and {labels.shape}"
        )
    if not np.isin(labels, POINT_LABELS).all():
        raise ValueError(f"prompt {index}: point labels must be 0 or 1")
    for point, (x, y) in enumerate(coords.tolist()):
        if not (0 <= x < width and 0 <= y < height):
            raise PromptOutOfBoundsError(
                f"prompt {index}: point {point} ({x}, {y}) lies outside the {width}x{height} image"
            )


def check_box(index: int, box: npt.NDArray[np.float32], height: int, width: int) -> None:
    if box.shape != (4,):
        raise ValueError(f"prompt {index}: box must be (4,) XYXY, got {box.shape}")
    x0, y0, x1, y1 = box.tolist()
    if not (0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height):
        raise PromptOutOfBoundsError(
            f"prompt {index}: box ({x0}, {y0}, {x1}, {y1}) lies outside the {width}x{height} image"
        )
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"prompt {index}: box needs x0 < x1 and y0 < y1, got ({x0}, {y0}, {x1}, {y1})")


class ImageRunner(Encoder[ImageEmbedding], Protocol):
    """Visual prompts → masks (``Sam2ImageRunner``, ``Sam3TrackerRunner``)."""

    @property
    def low_res_size(self) -> int: ...

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: list[VisualPrompt],
        multimask_output: bool,
        return_all_masks: bool,
        return_logits: bool = False,
    ) -> InstanceMasks: ...
