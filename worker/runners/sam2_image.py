"""SAM2 on single images: encode an image once, then decode any number of visual prompts against it.

The runner wraps Meta's ``SAM2ImagePredictor`` and calls it exactly as its documentation does (``set_image`` then
``predict`` per prompt), so its masks are the reference masks bit for bit. What it adds: weight resolution, seeded
random weights for tests, a portable :class:`ImageEmbedding` (cacheable in process or, as bytes, in shared storage),
prompt validation, best-mask selection, and typed :class:`~worker.results.InstanceMasks` results.

Not thread-safe: the predictor holds the current image's features while a call runs. A worker process runs one
job at a time, so one runner per process is used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import torch

from tasks.errors import PromptOutOfBoundsError
from worker import torchvision_compat
from worker.results import InstanceMasks, boxes_from_masks
from worker.runners import sam2_build
from worker.settings import WorkerSettings

# sam2's image predictor imports torchvision at import time, which fails on CPU machines carrying the CUDA
# torchvision wheel unless the shim is installed first. Keep this call above the sam2 imports.
torchvision_compat.install()

from sam2.build_sam import build_sam2  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

logger = logging.getLogger(__name__)

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
    """One instance to segment, in original-image pixels. At least one of the fields is set.

    - ``point_coords``: (K, 2) float32 ``(x, y)``; ``point_labels``: (K,) int32, 1 foreground / 0 background.
    - ``box``: (4,) float32 XYXY.
    - ``mask_input``: (1, r, r) float32 low-res logits from an earlier prediction (``InstanceMasks.low_res_logits``).
    """

    point_coords: npt.NDArray[np.float32] | None = None
    point_labels: npt.NDArray[np.int32] | None = None
    box: npt.NDArray[np.float32] | None = None
    mask_input: npt.NDArray[np.float32] | None = None


class Sam2ImageRunner:
    """A loaded SAM2 image model. Build it with :meth:`load`; then :meth:`encode` and :meth:`predict`."""

    def __init__(self, model_id: str, predictor: Any) -> None:
        self.model_id = model_id
        self._predictor = predictor
        self.device: str = str(predictor.device.type)
        """``"cpu"`` or ``"cuda"``."""
        self.image_size: int = int(predictor.model.image_size)
        """The square input resolution the model runs at (1024 unless shrunk)."""
        self.low_res_size: int = int(predictor.model.sam_prompt_encoder.mask_input_size[0])
        """Side of the low-res logits (and of ``mask_input``): ``image_size / 4``."""

    @classmethod
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam2ImageRunner:
        """Build the model on the settings' device, with checkpoint weights (or seeded random ones in dev/test)."""
        canonical, model = sam2_build.build(model_id, settings, build_sam2, apply_postprocessing=False)
        with warnings.catch_warnings():
            # SAM2Transforms scripts its resize/normalize module; torch >= 2.10 deprecates torch.jit.script.
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
            predictor = SAM2ImagePredictor(model)
        if settings.image_size:
            size = settings.image_size
            predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        return cls(canonical, predictor)

    def encode(self, image: npt.NDArray[np.uint8]) -> ImageEmbedding:
        """Run the image encoder on an (H, W, 3) uint8 RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        try:
            with self._inference():
                self._predictor.set_image(image)
                features: Sam2Features = {
                    "image_embed": self._predictor._features["image_embed"],
                    "high_res_feats": list(self._predictor._features["high_res_feats"]),
                }
        finally:
            self._predictor.reset_predictor()
        return ImageEmbedding.create(features, (int(image.shape[0]), int(image.shape[1])))

    def encode_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[ImageEmbedding]:
        """Run the image encoder once on several (H, W, 3) uint8 RGB images (sizes may differ): one embedding each.

        One ``set_image_batch`` call, its features split per image (batch dim 1 kept, copied so that an embedding
        does not hold the whole batch's tensors). Each embedding has the shapes :meth:`encode` gives; its values
        agree with :meth:`encode` up to float rounding (batched kernels may round differently).
        """
        check_images(images)
        try:
            with self._inference():
                self._predictor.set_image_batch(list(images))
                image_embed = self._predictor._features["image_embed"]
                high_res_feats = list(self._predictor._features["high_res_feats"])
                orig_hw = list(self._predictor._orig_hw)
                embeddings = []
                for i, (height, width) in enumerate(orig_hw):
                    features: Sam2Features = {
                        "image_embed": image_embed[i : i + 1].clone(),
                        "high_res_feats": [t[i : i + 1].clone() for t in high_res_feats],
                    }
                    embeddings.append(ImageEmbedding.create(features, (int(height), int(width))))
        finally:
            self._predictor.reset_predictor()
        return embeddings

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: Sequence[VisualPrompt],
        multimask_output: bool = True,
        return_all_masks: bool = False,
    ) -> InstanceMasks:
        """Decode each prompt against ``embedding``: its best mask by predicted IoU, or all of its masks.

        With ``multimask_output`` each prompt yields 3 candidates (else 1); ``return_all_masks`` keeps them all,
        in the model's order, with ``prompt_index`` repeated. Raises :class:`PromptOutOfBoundsError` for a point
        or box outside the image.
        """
        if not prompts:
            raise ValueError("at least one prompt is needed")
        height, width = embedding.orig_hw
        for index, prompt in enumerate(prompts):
            check_prompt(index, prompt, height, width, self.low_res_size)
        masks: list[npt.NDArray[np.bool_]] = []
        scores: list[npt.NDArray[np.float32]] = []
        logits: list[npt.NDArray[np.float32]] = []
        prompt_index: list[int] = []
        try:
            self._restore(embedding)
            with self._inference():
                for index, prompt in enumerate(prompts):
                    prompt_masks, prompt_scores, prompt_logits = self._predictor.predict(
                        point_coords=prompt.point_coords,
                        point_labels=prompt.point_labels,
                        box=prompt.box,
                        mask_input=prompt.mask_input,
                        multimask_output=multimask_output,
                        return_logits=False,
                        normalize_coords=True,
                    )
                    chosen = np.arange(len(prompt_scores)) if return_all_masks else np.array([np.argmax(prompt_scores)])
                    masks.append(prompt_masks[chosen].astype(bool))
                    scores.append(prompt_scores[chosen].astype(np.float32))
                    logits.append(prompt_logits[chosen].astype(np.float32))
                    prompt_index += [index] * len(chosen)
        finally:
            self._predictor.reset_predictor()
        all_masks = np.concatenate(masks)
        return InstanceMasks(
            masks=all_masks,
            scores=np.concatenate(scores),
            boxes=boxes_from_masks(all_masks),
            low_res_logits=np.concatenate(logits),
            prompt_index=np.asarray(prompt_index, dtype=np.int64),
        )

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            yield

    def _restore(self, embedding: ImageEmbedding) -> None:
        """Put an embedding back into the predictor, as ``set_image`` would have left it."""
        image_embed = embedding.features["image_embed"]
        high_res_feats = embedding.features["high_res_feats"]
        expected = self._predictor._bb_feat_sizes
        shapes = [tuple(t.shape[-2:]) for t in [*high_res_feats, image_embed]]
        if shapes != [tuple(size) for size in expected] or image_embed.shape[0] != 1:
            raise ValueError(
                f"the embedding's feature maps {shapes} do not fit this model ({self.model_id} at "
                f"{self.image_size}px expects {expected}): it was computed by another model or size"
            )
        self._predictor._features = {
            "image_embed": image_embed.to(self.device),
            "high_res_feats": [t.to(self.device) for t in high_res_feats],
        }
        self._predictor._orig_hw = [embedding.orig_hw]
        self._predictor._is_image_set = True
        self._predictor._is_batch = False


def check_images(images: Sequence[npt.NDArray[np.uint8]]) -> None:
    """A batch to encode: at least one image, each (H, W, 3) uint8 RGB (shared by the image runners)."""
    if not images:
        raise ValueError("at least one image is needed")
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index} must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")


def check_prompt(index: int, prompt: VisualPrompt, height: int, width: int, low_res_size: int) -> None:
    """A prompt's shape and bounds (shared by the SAM2 and SAM3 tracker runners)."""
    if prompt.point_coords is None and prompt.box is None and prompt.mask_input is None:
        raise ValueError(f"prompt {index} has no points, box or mask_input")
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
