"""How SAM3 concept detections are chosen and upsampled: the job-level cap, cross-query NMS, chunked upsampling.

Pure torch / numpy, no model: :class:`CandidatePool` collects each query's detections with bounded memory and
:meth:`CandidatePool.select` picks the best ``max_detections`` (after greedy NMS on low-res masks when asked);
:func:`upsample_masks` turns low-res logits into full-size masks exactly as transformers' post-processing does.
The policy is described in :mod:`worker.runners.sam3_concept`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5
"""Mask pixels are on where the upsampled mask probability exceeds this (transformers' default)."""


def upsample_masks(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, r, r) low-res mask logits → (C, H, W) bool masks, as transformers post-processes them (sigmoid, bilinear
    resize, > 0.5). Channels are independent, so any chunking gives the same masks."""
    probabilities = logits.sigmoid().unsqueeze(0)
    resized = torch.nn.functional.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
    return resized.squeeze(0) > MASK_THRESHOLD


class CandidatePool:
    """Detections of all queries so far, for the job-level cap (and NMS), with bounded memory.

    Candidates are identified by arrival order (query by query, model order within a query); ranking is by score,
    ties by arrival. Without NMS only the best ``max_detections`` are kept (with their low-res logits). With NMS
    every candidate's metadata and bit-packed low-res mask is kept, but logits only for the best
    ``2 * max_detections``; :meth:`logits` asks for the others again.
    """

    def __init__(self, max_detections: int, nms_iou: float | None) -> None:
        self.max_detections = max_detections
        self.nms_iou = nms_iou
        self.scores = np.zeros(0, np.float32)
        self.boxes = np.zeros((0, 4), np.float32)
        self.prompt_index = np.zeros(0, np.int64)
        self.slots = np.zeros(0, np.int64)
        """Each candidate's position in its query's model output (to find it again)."""
        self.arrival = np.zeros(0, np.int64)
        self.packed_masks: list[npt.NDArray[np.uint8]] = []
        self._logits: dict[int, torch.Tensor] = {}
        self._side = 0
        self._arrived = 0

    def add(
        self,
        prompt_index: int,
        slots: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        boxes: npt.NDArray[np.float32],
        logits: torch.Tensor,
    ) -> None:
        arrival = np.arange(self._arrived, self._arrived + len(slots), dtype=np.int64)
        self._arrived += len(slots)
        self.scores = np.concatenate([self.scores, scores.astype(np.float32)])
        self.boxes = np.concatenate([self.boxes, boxes.astype(np.float32)])
        self.prompt_index = np.concatenate([self.prompt_index, np.full(len(slots), prompt_index, np.int64)])
        self.slots = np.concatenate([self.slots, slots.astype(np.int64)])
        self.arrival = np.concatenate([self.arrival, arrival])
        if self.nms_iou is not None and len(slots):
            self._side = int(logits.shape[-1])
            on = (logits > 0).reshape(len(slots), -1).cpu().numpy()
            self.packed_masks += list(np.packbits(on, axis=1))
        retained = self._trim()
        for key, row in zip(arrival.tolist(), logits.unbind(0), strict=True):
            if key in retained:
                self._logits[key] = row.clone()  # a copy: a kept row must not hold its whole query's output

    def _ranked(self) -> npt.NDArray[np.intp]:
        return np.lexsort((self.arrival, -self.scores))

    def _trim(self) -> set[int]:
        """Drop what can no longer be chosen; the arrival ids whose logits are worth keeping."""
        order = self._ranked()
        if self.nms_iou is None:
            keep = order[: self.max_detections]
            self.scores, self.boxes = self.scores[keep], self.boxes[keep]
            self.prompt_index, self.slots, self.arrival = self.prompt_index[keep], self.slots[keep], self.arrival[keep]
            order = np.arange(len(keep))  # the arrays are now in rank order
        retained = set(self.arrival[order[: 2 * self.max_detections]].tolist())
        for key in [k for k in self._logits if k not in retained]:
            del self._logits[key]
        return retained

    def select(self) -> npt.NDArray[np.intp]:
        """Positions of the chosen candidates, best first: the top ``max_detections`` (after greedy NMS)."""
        order = self._ranked()
        nms_iou = self.nms_iou
        if nms_iou is None:
            return order[: self.max_detections]
        pixels = self._side * self._side
        capacity = min(self.max_detections, len(order))
        kept = torch.zeros((capacity, pixels))  # 0/1 masks: float32 matmul counts are exact
        areas = torch.zeros(capacity)
        chosen: list[int] = []
        for position in order.tolist():
            mask = torch.from_numpy(np.unpackbits(self.packed_masks[position], count=pixels).astype(np.float32))
            area = mask.sum()
            count = len(chosen)
            if count:
                intersection = kept[:count] @ mask
                union = areas[:count] + area - intersection
                iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
                if bool((iou > nms_iou).any()):
                    continue
            kept[count], areas[count] = mask, area
            chosen.append(position)
            if len(chosen) == capacity:
                break
        return np.asarray(chosen, dtype=np.intp)

    def logits(self, chosen: npt.NDArray[np.intp], rerun: Callable[[int], torch.Tensor]) -> list[torch.Tensor]:
        """The low-res logits of the chosen candidates, running ``rerun(prompt_index)`` for evicted ones."""
        rerun_cache: dict[int, torch.Tensor] = {}
        found: list[torch.Tensor] = []
        for position in chosen.tolist():
            logits = self._logits.get(int(self.arrival[position]))
            if logits is None:
                prompt = int(self.prompt_index[position])
                if prompt not in rerun_cache:
                    logger.debug("re-running query %d for logits evicted before NMS chose them", prompt)
                    rerun_cache[prompt] = rerun(prompt)
                logits = rerun_cache[prompt][int(self.slots[position])]
            found.append(logits)
        return found
