"""The SAM3 tracker on single images: SAM2-style visual prompts (points, a box, a low-res mask) on SAM3's backbone.

The runner wraps transformers' ``Sam3TrackerModel`` + ``Sam3TrackerProcessor`` and has the same interface as
:class:`~worker.runners.sam2_image.Sam2ImageRunner` (``image_size``, ``low_res_size``, ``device``, ``encode``,
``predict``), so the segment / embed pipeline runs it for ``model: "sam3"`` unchanged. Its embedding is even the
same type, :class:`~worker.runners.sam2_image.ImageEmbedding`: the tracker's three feature maps (the 1/14 image
embedding and the two projected high-resolution maps) fill the same two fields.

Each prompt is decoded by itself with exactly what the documented call computes (``processor(images, input_points,
input_labels, input_boxes)`` → ``model(**inputs)`` → ``processor.post_process_masks``: bilinear upsampling of the
low-res logits, > 0), on the cached image features. ``low_res_size`` is ``4 * image_size / 14`` (288 for the
released model): ``mask_input`` logits from an earlier prediction must have that side.

Not thread-safe (one job at a time per worker process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worker import torchvision_compat
from worker.results import InstanceMasks, boxes_from_masks
from worker.runners.device import inference, select_device
from worker.runners.image import ImageEmbedding, Sam2Features, VisualPrompt, check_images, check_prompt
from worker.runners.sam3 import (
    DEFAULT_RANDOM_IMAGE_SIZE,
    build_random,
    image_processor,
    input_size,
    load_pretrained,
    load_processor,
    shrunk_tracker_config,
)
from worker.settings import WorkerSettings
from worker.weights import pretrained_card

torchvision_compat.install()  # before transformers' SAM3 modules import torchvision (a no-op if already done)

from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerProcessor  # noqa: E402


class Sam3TrackerRunner:
    """A loaded SAM3 tracker. Build it with :meth:`load`; then :meth:`encode` and :meth:`predict`."""

    def __init__(self, model_id: str, model: Any, processor: Any, device: str) -> None:
        self.model_id = model_id
        self._model = model
        self._processor = processor
        self.device = device
        """``"cpu"`` or ``"cuda"``."""
        self.image_size: int = int(model.config.prompt_encoder_config.image_size)
        """The square input side the model runs at (1008 for the released model)."""
        self.low_res_size: int = int(model.prompt_encoder.mask_input_size[0])
        """Side of the low-res logits (and of ``mask_input``): ``4 * image_size / 14``."""
        self._feature_sizes = [tuple(int(v) for v in size) for size in model.backbone_feature_sizes]

    @classmethod
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam3TrackerRunner:
        """Build the model on the settings' device, from the checkpoint folder (or seeded random weights, shrunk)."""
        card = pretrained_card(model_id)
        device = select_device(settings)
        size = input_size(settings)
        if settings.random_weights:
            size = size or DEFAULT_RANDOM_IMAGE_SIZE
            model = build_random(Sam3TrackerModel, shrunk_tracker_config(size), card.model_id, settings, device)
            processor = Sam3TrackerProcessor(image_processor=image_processor(size))
        else:
            model, directory = load_pretrained(
                Sam3TrackerModel, Sam3TrackerConfig, "tracker", card.model_id, settings, size, device
            )
            processor = load_processor(Sam3TrackerProcessor, directory, card.model_id, size)
        return cls(card.model_id, model, processor, device)

    def encode(self, image: npt.NDArray[np.uint8]) -> ImageEmbedding:
        """Run the image encoder on an (H, W, 3) uint8 RGB image."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[ImageEmbedding]:
        """Run the image encoder once on several (H, W, 3) uint8 RGB images (sizes may differ): one embedding each.

        One processor call and one ``get_image_embeddings`` call on the stacked pixel values, the maps split per
        image (batch dim 1 kept, copied so that an embedding does not hold the whole batch's tensors).
        """
        check_images(images)
        pixel_values = self._processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        with inference(self.device):
            maps = list(self._model.get_image_embeddings(pixel_values))
            per_image = [[t[i : i + 1].clone() for t in maps] for i in range(len(images))]
        embeddings = []
        for image, image_maps in zip(images, per_image, strict=True):
            features: Sam2Features = {"image_embed": image_maps[-1], "high_res_feats": image_maps[:-1]}
            embeddings.append(ImageEmbedding.create(features, (int(image.shape[0]), int(image.shape[1]))))
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

        Same contract as :meth:`Sam2ImageRunner.predict <worker.runners.sam2_image.Sam2ImageRunner.predict>`;
        ``boxes`` are computed from the masks.
        """
        if not prompts:
            raise ValueError("at least one prompt is needed")
        height, width = embedding.orig_hw
        for index, prompt in enumerate(prompts):
            check_prompt(index, prompt, height, width, self.low_res_size)
        maps = self._restore(embedding)
        masks: list[npt.NDArray[np.bool_]] = []
        mask_logits: list[npt.NDArray[np.float32]] = []
        scores: list[npt.NDArray[np.float32]] = []
        logits: list[npt.NDArray[np.float32]] = []
        prompt_index: list[int] = []
        with inference(self.device):
            for index, prompt in enumerate(prompts):
                out = self._decode(maps, prompt, multimask_output, height, width)
                prompt_scores = out.iou_scores[0, 0].float().cpu().numpy()
                chosen = np.arange(len(prompt_scores)) if return_all_masks else np.array([np.argmax(prompt_scores)])
                upsampled = self._processor.post_process_masks(
                    out.pred_masks, [[height, width]], binarize=not return_logits
                )[0][0]
                if return_logits:  # the processor's own binarization (> 0), done here on the logits
                    mask_logits.append(upsampled.float().cpu().numpy()[chosen])
                    masks.append(mask_logits[-1] > 0.0)
                else:
                    masks.append(upsampled.cpu().numpy()[chosen].astype(bool))
                scores.append(prompt_scores[chosen].astype(np.float32))
                logits.append(out.pred_masks[0, 0].float().cpu().numpy()[chosen])
                prompt_index += [index] * len(chosen)
        all_masks = np.concatenate(masks)
        return InstanceMasks(
            masks=all_masks,
            scores=np.concatenate(scores),
            boxes=boxes_from_masks(all_masks),
            low_res_logits=np.concatenate(logits),
            prompt_index=np.asarray(prompt_index, dtype=np.int64),
            logits=np.concatenate(mask_logits) if return_logits else None,
        )

    def _decode(
        self, maps: list[torch.Tensor], prompt: VisualPrompt, multimask_output: bool, height: int, width: int
    ) -> Any:
        """The prompt encoder and mask decoder for one prompt, coordinates normalised by the processor."""
        inputs = self._processor(
            original_sizes=[[height, width]],
            input_points=None if prompt.point_coords is None else [[prompt.point_coords.tolist()]],
            input_labels=None if prompt.point_labels is None else [[prompt.point_labels.tolist()]],
            input_boxes=None if prompt.box is None else [[prompt.box.tolist()]],
            return_tensors="pt",
        )
        names = ("input_points", "input_labels", "input_boxes")
        prompt_inputs = {name: inputs[name].to(self.device) for name in names if name in inputs}
        if prompt.mask_input is not None:
            prompt_inputs["input_masks"] = torch.from_numpy(prompt.mask_input)[None].to(self.device)
        return self._model(image_embeddings=maps, multimask_output=multimask_output, **prompt_inputs)

    def _restore(self, embedding: ImageEmbedding) -> list[torch.Tensor]:
        """The embedding's maps as the model's ``image_embeddings`` (high-res first), on this device."""
        image_embed = embedding.features["image_embed"]
        maps = [*embedding.features["high_res_feats"], image_embed]
        sizes = [tuple(int(v) for v in t.shape[-2:]) for t in maps]
        if sizes != self._feature_sizes or any(t.shape[0] != 1 for t in maps):
            raise ValueError(
                f"the embedding's feature maps {sizes} do not fit this model ({self.model_id} at {self.image_size}px "
                f"expects {self._feature_sizes}): it was computed by another model or size"
            )
        return [t.to(self.device) for t in maps]
