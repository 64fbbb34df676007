"""SAM3 concept segmentation on single images: every instance of a phrase (and/or of exemplar boxes).

The runner wraps transformers' ``Sam3Model`` + ``Sam3Processor``. :meth:`Sam3ConceptRunner.encode` runs the vision
encoder ONCE per image (``get_vision_features``); :meth:`Sam3ConceptRunner.detect` then runs the DETR-style head
for each :class:`ConceptQuery` on those cached features. Per query it computes exactly what the documented call
does (``processor(images=image, text=phrase)`` → ``model(**inputs)`` →
``processor.post_process_instance_segmentation(outputs, threshold, mask_threshold=0.5, target_sizes)``), but:

- Queries run one at a time on the shared features. transformers can batch several texts (by repeating the image
  features), but its batched results differ from the single-text call in the last bits (~1e-9), which can flip
  mask pixels at the 0.5 threshold: exactness first.
- A detection is kept when ``score >= query.threshold`` (transformers keeps ``>``), score = sigmoid(class logit) x
  sigmoid(presence logit), as transformers computes it.
- ``max_detections`` caps the WHOLE JOB (all queries together, best scores first, ties in query then model order)
  BEFORE any mask is upsampled; kept masks are then upsampled in chunks of ``chunk_size``, so at most
  ``chunk_size`` full-size float masks exist at a time (transformers upsamples all kept masks at once: 6.5 GB for
  100 masks at 4032²). Without NMS the candidates are cut to the best ``max_detections`` after every query, so
  memory stays bounded whatever the number of queries and the threshold.
- Optional cross-query NMS (``nms_iou``): greedy by score over all kept candidates; a candidate is dropped when its
  mask IoU with an already kept one is > ``nms_iou``. IoU is computed on the LOW-RES masks (logit > 0, i.e.
  probability > 0.5, on the model's 4x feature grid: 288² for the released model), before the cap, so duplicates
  do not use up ``max_detections``. Candidates are remembered as bit-packed low-res masks; low-res logits are kept
  only for the best ``2 x max_detections`` of them, and a query whose evicted candidate is finally chosen is run
  again (the head is deterministic, so its logits are the same).
  (:mod:`worker.runners.sam3_selection` holds this machinery.)
- Boxes are the model's own box predictions (not recomputed from the masks), scaled to original-image pixels as
  transformers scales them, then clipped to the image.

Not thread-safe (one job at a time per worker process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worker import torchvision_compat
from worker.runners.concept import ConceptInstances, ConceptQuery, Sam3Embedding
from worker.runners.device import inference, select_device
from worker.runners.image import check_box, check_images
from worker.runners.sam3 import (
    DEFAULT_RANDOM_IMAGE_SIZE,
    PATCH_SIZE,
    build_random,
    clip_tokenizer,
    image_processor,
    input_size,
    load_pretrained,
    load_processor,
    shrunk_concept_config,
)
from worker.runners.sam3_selection import CandidatePool
from worker.settings import WorkerSettings
from worker.weights import pretrained_card

torchvision_compat.install()  # before transformers' SAM3 modules import torchvision (a no-op if already done)

from transformers import Sam3Config, Sam3Model, Sam3Processor  # noqa: E402
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput  # noqa: E402


@dataclass
class _Head:
    """One query's head outputs: low-res mask logits (Q, r, r), scores (Q,), pixel XYXY boxes (Q, 4), CPU float32
    except the logits (model device and dtype)."""

    logits: torch.Tensor
    scores: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]


class Sam3ConceptRunner:
    """A loaded SAM3 concept model. Build it with :meth:`load`; then :meth:`encode` and :meth:`detect`."""

    def __init__(self, model_id: str, model: Any, processor: Any, device: str) -> None:
        self.model_id = model_id
        self._model = model
        self._processor = processor
        self.device = device
        """``"cpu"`` or ``"cuda"``."""
        vision = model.config.vision_config
        self.image_size: int = int(vision.image_size)
        """The square input side the model runs at (1008 for the released model)."""
        grid = self.image_size // PATCH_SIZE
        self.low_res_size: int = 4 * grid
        """Side of the model's mask logits (and of the masks NMS compares): ``4 * image_size / 14``."""
        channels = int(vision.fpn_hidden_size)
        self._map_shapes = [(1, channels, int(grid * s), int(grid * s)) for s in vision.scale_factors]

    @classmethod
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam3ConceptRunner:
        """Build the model on the settings' device, from the checkpoint folder (or seeded random weights, shrunk)."""
        card = pretrained_card(model_id)
        device = select_device(settings)
        size = input_size(settings)
        if settings.random_weights:
            size = size or DEFAULT_RANDOM_IMAGE_SIZE
            model = build_random(Sam3Model, shrunk_concept_config(size), card.model_id, settings, device)
            processor = Sam3Processor(image_processor=image_processor(size), tokenizer=clip_tokenizer())
        else:
            model, directory = load_pretrained(Sam3Model, Sam3Config, "detector", card.model_id, settings, size, device)
            processor = load_processor(Sam3Processor, directory, card.model_id, size)
        return cls(card.model_id, model, processor, device)

    def encode(self, image: npt.NDArray[np.uint8]) -> Sam3Embedding:
        """Run the vision encoder (ViT + FPN neck) once on an (H, W, 3) uint8 RGB image."""
        return self.encode_batch([image])[0]

    def encode_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Sam3Embedding]:
        """Run the vision encoder once on several (H, W, 3) uint8 RGB images (sizes may differ): one embedding each.

        One processor call and one ``get_vision_features`` call on the stacked pixel values, the maps split per
        image (batch dim 1 kept, copied so that an embedding does not hold the whole batch's tensors).
        """
        check_images(images)
        pixel_values = self._processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        with inference(self.device):
            vision = self._model.get_vision_features(pixel_values=pixel_values)
            per_image = [[t[i : i + 1].clone() for t in vision.fpn_hidden_states] for i in range(len(images))]
        return [
            Sam3Embedding.create(maps, (int(image.shape[0]), int(image.shape[1])))
            for image, maps in zip(images, per_image, strict=True)
        ]

    def detect(
        self,
        embedding: Sam3Embedding,
        queries: Sequence[ConceptQuery],
        *,
        max_detections: int,
        nms_iou: float | None,
        chunk_size: int = 8,
    ) -> ConceptInstances:
        """Every instance of every query, best ``max_detections`` of the whole job (see the module docstring).

        A query with nothing above its threshold contributes nothing. Raises :class:`PromptOutOfBoundsError` for
        an exemplar box outside the image.
        """
        if not queries:
            raise ValueError("at least one query is needed")
        if max_detections < 1 or chunk_size < 1:
            raise ValueError(f"max_detections and chunk_size must be >= 1, got {max_detections} and {chunk_size}")
        if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be within [0, 1], got {nms_iou}")
        height, width = embedding.orig_hw
        for index, query in enumerate(queries):
            for box in query.boxes:
                check_box(index, np.asarray(box, dtype=np.float32), height, width)
        vision = self._vision(embedding)

        def head(index: int) -> _Head:
            return self._head(vision, queries[index], height, width)

        pool = CandidatePool(max_detections, nms_iou)
        with inference(self.device):
            for index, query in enumerate(queries):
                out = head(index)
                kept = np.flatnonzero(out.scores >= query.threshold)
                pool.add(index, kept, out.scores[kept], out.boxes[kept], out.logits[torch.from_numpy(kept)])
            chosen = pool.select()
            logits = pool.logits(chosen, lambda index: head(index).logits)
        side = self.low_res_size
        return ConceptInstances(
            logits=torch.stack(logits) if logits else torch.zeros((0, side, side), device=self.device),
            scores=pool.scores[chosen],
            boxes=pool.boxes[chosen],
            prompt_index=pool.prompt_index[chosen],
            image_hw=(height, width),
            device=self.device,
            chunk_size=chunk_size,
        )

    def _vision(self, embedding: Sam3Embedding) -> Any:
        """The embedding as the model's ``vision_embeds`` (position encodings recomputed), on this device."""
        maps = [t.to(self.device) for t in embedding.fpn_hidden_states]
        shapes = [tuple(t.shape) for t in maps]
        if shapes != self._map_shapes:
            raise ValueError(
                f"the embedding's feature maps {shapes} do not fit this model ({self.model_id} at {self.image_size}px "
                f"expects {self._map_shapes}): it was computed by another model or size"
            )
        encode_position = self._model.vision_encoder.neck.position_encoding
        with inference(self.device):
            positions = tuple(encode_position(t.shape, t.device, t.dtype) for t in maps)
        return Sam3VisionEncoderOutput(fpn_hidden_states=tuple(maps), fpn_position_encoding=positions)

    def _head(self, vision: Any, query: ConceptQuery, height: int, width: int) -> _Head:
        """The DETR head for one query on cached features: what ``model(**processor(images, text, boxes))`` gives."""
        boxes = [[float(v) for v in box] for box in query.boxes]
        inputs = self._processor(
            text=query.text,
            input_boxes=[boxes] if boxes else None,
            input_boxes_labels=[[int(label) for label in query.box_labels]] if boxes else None,
            original_sizes=[[height, width]],
            return_tensors="pt",
        )
        names = ("input_ids", "attention_mask", "input_boxes", "input_boxes_labels")
        out = self._model(vision_embeds=vision, **{k: inputs[k].to(self.device) for k in names if k in inputs})
        scores = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()
        scale = torch.tensor([width, height, width, height], device=out.pred_boxes.device)  # as transformers scales
        boxes_px = out.pred_boxes * scale
        limit = torch.tensor([width, height, width, height], dtype=boxes_px.dtype, device=boxes_px.device)
        boxes_px = torch.minimum(boxes_px.clamp(min=0), limit)
        return _Head(
            logits=out.pred_masks[0],
            scores=scores[0].float().cpu().numpy(),
            boxes=boxes_px[0].float().cpu().numpy(),
        )
