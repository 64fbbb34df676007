"""SAM2 on single images: encode an image once, then decode any number of visual prompts against it.

The runner wraps Meta's ``SAM2ImagePredictor`` and calls it exactly as its documentation does (``set_image`` then
``predict`` per prompt), so its masks are the reference masks bit for bit. What it adds: weight resolution, seeded
random weights for tests, a portable :class:`ImageEmbedding` (cacheable in process or, as bytes, in shared storage),
prompt validation, best-mask selection, and typed :class:`~worker.results.InstanceMasks` results.

Not thread-safe: the predictor holds the current image's features while a call runs. A worker process runs one
job at a time, so one runner per process is used by one thread at a time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from worker import torchvision_compat
from worker.results import InstanceMasks, boxes_from_masks
from worker.runners import sam2_build
from worker.runners.device import inference
from worker.runners.image import ImageEmbedding, Sam2Features, VisualPrompt, check_images, check_prompt
from worker.settings import WorkerSettings

# sam2's image predictor imports torchvision at import time, which fails on CPU machines carrying the CUDA
# torchvision wheel unless the shim is installed first. Keep this call above the sam2 imports.
torchvision_compat.install()

from sam2.build_sam import build_sam2  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

logger = logging.getLogger(__name__)


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
            with inference(self.device):
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
            with inference(self.device):
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
        return_logits: bool = False,
    ) -> InstanceMasks:
        """Decode each prompt against ``embedding``: its best mask by predicted IoU, or all of its masks.

        With ``multimask_output`` each prompt yields 3 candidates (else 1); ``return_all_masks`` keeps them all,
        in the model's order, with ``prompt_index`` repeated; ``return_logits`` keeps the masks' float logits too.
        Raises :class:`PromptOutOfBoundsError` for a point or box outside the image.
        """
        if not prompts:
            raise ValueError("at least one prompt is needed")
        height, width = embedding.orig_hw
        for index, prompt in enumerate(prompts):
            check_prompt(index, prompt, height, width, self.low_res_size)
        masks: list[npt.NDArray[np.bool_]] = []
        mask_logits: list[npt.NDArray[np.float32]] = []
        scores: list[npt.NDArray[np.float32]] = []
        logits: list[npt.NDArray[np.float32]] = []
        prompt_index: list[int] = []
        try:
            self._restore(embedding)
            with inference(self.device):
                for index, prompt in enumerate(prompts):
                    prompt_masks, prompt_scores, prompt_logits = self._predictor.predict(
                        point_coords=prompt.point_coords,
                        point_labels=prompt.point_labels,
                        box=prompt.box,
                        mask_input=prompt.mask_input,
                        multimask_output=multimask_output,
                        return_logits=return_logits,
                        normalize_coords=True,
                    )
                    chosen = np.arange(len(prompt_scores)) if return_all_masks else np.array([np.argmax(prompt_scores)])
                    if return_logits:  # the predictor's own binarization, done here on the logits it returned
                        mask_logits.append(prompt_masks[chosen].astype(np.float32))
                        masks.append(mask_logits[-1] > self._predictor.mask_threshold)
                    else:
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
            logits=np.concatenate(mask_logits) if return_logits else None,
        )

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
