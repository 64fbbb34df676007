"""SAM2 "segment everything": Meta's ``SAM2AutomaticMaskGenerator``, with memory bounded by a setting.

The generator prompts the model with a grid of points, a batch at a time, over the image and, with
``crop_n_layers``, over overlapping crops of it; it filters the candidates by predicted IoU and by stability, drops
those touching a crop's edge, and removes duplicates by box NMS, per crop and across crops.

Its own ``_process_batch`` upsamples every candidate of a batch to the crop's full size at once: 64 points × 3 masks
of a 4000×3000 image in float32 is 9 GB. Here a batch's candidates stay at the decoder's resolution (256²) through
the predicted-IoU filter; the survivors are then upsampled, scored, thresholded, boxed and encoded ``chunk`` masks
at a time, with the library's own functions. Each of those steps works mask by mask, so the results equal the
generator's bit for bit, in the generator's order (per crop by NMS score, then across crops); kept masks are held as
COCO compressed RLE. Peak memory grows with ``chunk`` and the image, not with the number of masks.

The full image's embedding can come from the cache that segment jobs share (:class:`ImageEmbedding`); the crops of
``crop_n_layers`` are images of their own and are encoded each time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from worker import torchvision_compat
from worker.encoders import Rle, encode_rle
from worker.runners.device import inference
from worker.runners.image import ImageEmbedding
from worker.runners.sam2_image import Sam2ImageRunner  # (its sam2_build installs sam2's components first)

# sam2 imports torchvision at import time; see worker.torchvision_compat. Keep this call above the sam2 imports.
torchvision_compat.install()

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402
from sam2.utils.amg import (  # noqa: E402
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_masks,
)

Predicted = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""The predictor's ``_predict``: masks (logits here), predicted IoUs, low-res logits."""
Between = Callable[[int, int], None]
"""Called after each batch of points with (batches done, batches in all); it may raise to stop the job."""


@dataclass(frozen=True)
class GeneratorParams:
    """``SAM2AutomaticMaskGenerator``'s parameters, under its names and with its defaults."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    multimask_output: bool = True


@dataclass(frozen=True)
class GeneratedMasks:
    """The generator's masks, in its order: N masks of the image's full size."""

    rles: list[Rle]
    boxes: npt.NDArray[np.float32]
    """(N, 4) XYXY, as the generator computes them (the last pixel row and column inside, not past, the mask)."""
    predicted_iou: npt.NDArray[np.float32]
    stability_score: npt.NDArray[np.float32]
    point_coords: npt.NDArray[np.float32]
    """(N, 2) the point prompt each mask came from, in image pixels."""
    crop_boxes: npt.NDArray[np.int64]
    """(N, 4) XYXY of the crop each mask was found in."""
    upsampled: int = 0
    """Candidates that passed the predicted-IoU filter and were upsampled to full size (the costly part)."""

    def best(self, limit: int | None) -> GeneratedMasks:
        """The ``limit`` masks of highest predicted IoU (ties: the earlier), in the generator's order; all if None."""
        if limit is None or len(self.rles) <= limit:
            return self
        keep = np.sort(np.argsort(-self.predicted_iou, kind="stable")[:limit])
        return GeneratedMasks(
            rles=[self.rles[i] for i in keep.tolist()],
            boxes=self.boxes[keep],
            predicted_iou=self.predicted_iou[keep],
            stability_score=self.stability_score[keep],
            point_coords=self.point_coords[keep],
            crop_boxes=self.crop_boxes[keep],
            upsampled=self.upsampled,
        )


class Sam2EverythingRunner:
    """Segment everything with the model of a loaded :class:`Sam2ImageRunner` (one model in memory for both)."""

    def __init__(self, image_runner: Sam2ImageRunner, chunk: int) -> None:
        self.image_runner = image_runner
        self.chunk = chunk

    def batches(self, image_hw: tuple[int, int], params: GeneratorParams) -> int:
        """The number of point batches a job runs (its progress total)."""
        crop_boxes, layers = generate_crop_boxes(list(image_hw), params.crop_n_layers, params.crop_overlap_ratio)
        return sum(
            math.ceil(_points(params, layer) / params.points_per_batch)
            for _, layer in zip(crop_boxes, layers, strict=True)
        )

    def generate(
        self,
        image: npt.NDArray[np.uint8],
        params: GeneratorParams,
        embedding: ImageEmbedding | None = None,
        between: Between | None = None,
    ) -> GeneratedMasks:
        """Every mask of an (H, W, 3) uint8 RGB image; ``embedding`` (of this image, by this model) skips its encode."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        total = self.batches((int(image.shape[0]), int(image.shape[1])), params)
        generator = _Generator(self.image_runner, params, self.chunk, embedding, _counting(between, total))
        with inference(self.image_runner.device):
            data = generator._generate_masks(image)
        return GeneratedMasks(
            rles=list(data["rles"]),
            boxes=np.asarray(data["boxes"], dtype=np.float32).reshape(-1, 4),
            predicted_iou=np.asarray(data["iou_preds"], dtype=np.float32),
            stability_score=np.asarray(data["stability_score"], dtype=np.float32),
            point_coords=np.asarray(data["points"], dtype=np.float32).reshape(-1, 2),
            crop_boxes=np.asarray(data["crop_boxes"], dtype=np.int64).reshape(-1, 4),
            upsampled=generator.upsampled,
        )


def _points(params: GeneratorParams, layer: int) -> int:
    """Points in each crop of ``layer`` (the generator's ``build_all_layer_point_grids``)."""
    return int(params.points_per_side / params.crop_n_points_downscale_factor**layer) ** 2


def _counting(between: Between | None, total: int) -> Callable[[], None]:
    done = [0]

    def batch_done() -> None:
        done[0] += 1
        if between is not None:
            between(done[0], total)

    return batch_done


class _Predictor(SAM2ImagePredictor):  # type: ignore[misc]  # sam2 has no type hints
    """The generator's predictor: the full image's embedding restored instead of encoded, when one is given; and
    ``keep_low_res`` for the decoder's masks at its own resolution, hole filling and all (no upsampling)."""

    def __init__(self, runner: Sam2ImageRunner, embedding: ImageEmbedding | None, min_area: int) -> None:
        super().__init__(runner._predictor.model, max_hole_area=min_area, max_sprinkle_area=min_area)
        self._bb_feat_sizes = runner._predictor._bb_feat_sizes  # a shrunk dev/test build's feature sizes
        self._runner, self._embedding = runner, embedding
        self.keep_low_res = False

    def set_image(self, image: Any) -> None:
        embedding = self._embedding
        if embedding is not None and tuple(image.shape[:2]) == tuple(embedding.orig_hw):  # the whole image
            self._runner._restore(embedding)
            self._features, self._orig_hw = self._runner._predictor._features, [embedding.orig_hw]
            self._is_image_set, self._is_batch = True, False
            self._runner._predictor.reset_predictor()
            return
        super().set_image(image)

    def _predict(self, *args: Any, **kwargs: Any) -> Predicted:
        if not self.keep_low_res:
            return cast(Predicted, super()._predict(*args, **kwargs))
        orig_hw = self._orig_hw
        try:  # the library's post-processing (hole filling), "upsampled" to the size it already has
            self._orig_hw = [tuple(self.model.sam_prompt_encoder.mask_input_size)]
            return cast(Predicted, super()._predict(*args, **kwargs))
        finally:
            self._orig_hw = orig_hw


class _Generator(SAM2AutomaticMaskGenerator):  # type: ignore[misc]  # sam2 has no type hints
    """The library's generator with :meth:`_process_batch` done in chunks (see the module's docstring)."""

    def __init__(
        self,
        runner: Sam2ImageRunner,
        params: GeneratorParams,
        chunk: int,
        embedding: ImageEmbedding | None,
        batch_done: Callable[[], None],
    ) -> None:
        super().__init__(runner._predictor.model, **asdict(params), output_mode="coco_rle")
        self.predictor = _Predictor(runner, embedding, params.min_mask_region_area)
        self._chunk, self._batch_done = chunk, batch_done
        self.upsampled = 0

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], crop_layer_idx: int, orig_size: tuple[int, ...]
    ) -> MaskData:
        data = super()._process_crop(image, crop_box, crop_layer_idx, orig_size)
        data["crop_boxes"] = data["crop_boxes"].reshape(-1, 4)  # (0, 4), not the library's (0,), when none is kept
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        im_size: tuple[int, ...],
        crop_box: list[int],
        orig_size: tuple[int, ...],
        normalize: bool = False,
    ) -> MaskData:
        predictor = self.predictor
        points_t = torch.as_tensor(points, dtype=torch.float32, device=predictor.device)
        in_points = predictor._transforms.transform_coords(points_t, normalize=normalize, orig_hw=im_size)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        low, iou_preds, low_res_masks = self._predict_low(
            in_points[:, None, :], in_labels[:, None], None, self.multimask_output
        )
        data = MaskData(
            low=low.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=points_t.repeat_interleave(low.shape[1], dim=0),
        )
        if self.use_m2m:  # one refinement step, from each candidate's own low-res logits
            in_points = predictor._transforms.transform_coords(data["points"], normalize=normalize, orig_hw=im_size)
            labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            refined, ious = [], []
            for start in range(0, len(labels), self.points_per_batch):
                batch = slice(start, start + self.points_per_batch)
                masks, batch_ious, _ = self._predict_low(
                    in_points[batch][:, None, :], labels[batch][:, None], low_res_masks.flatten(0, 1)[batch][:, None]
                )
                refined.append(masks)
                ious.append(batch_ious)
            data["low"], data["iou_preds"] = torch.cat(refined).squeeze(1), torch.cat(ious).squeeze(1)
        del low, low_res_masks
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        self._finish(data, im_size, crop_box, orig_size)
        self._batch_done()
        return data

    def _predict_low(
        self, points: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None, multimask: bool = False
    ) -> Predicted:
        """The predictor's ``_predict`` (logits), its masks left at the decoder's resolution."""
        predictor = self.predictor
        assert isinstance(predictor, _Predictor)
        predictor.keep_low_res = True
        try:
            return predictor._predict(
                points, labels, mask_input=mask_input, multimask_output=multimask, return_logits=True
            )
        finally:
            predictor.keep_low_res = False

    def _finish(
        self, data: MaskData, im_size: tuple[int, ...], crop_box: list[int], orig_size: tuple[int, ...]
    ) -> None:
        """The rest of the library's ``_process_batch``, ``chunk`` masks at a time: upsample, stability score and
        filter, threshold, boxes, the crop-edge filter, uncrop, RLE. Replaces ``low`` by ``stability_score``,
        ``boxes`` and ``rles``."""
        orig_h, orig_w = orig_size
        self.upsampled += len(data["low"])
        stability, stable, boxes, rles, near_edge = [], [], [], [], []
        for low in _chunks(data["low"], self._chunk):
            masks = F.interpolate(low[:, None], tuple(im_size), mode="bilinear", align_corners=False)[:, 0]
            scores = calculate_stability_score(masks, self.mask_threshold, self.stability_score_offset)
            keep = scores >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else None
            stability.append(scores)
            if keep is not None:
                stable.append(keep)
                masks = masks[keep]
            if len(masks) == 0:
                continue
            binary = masks > self.mask_threshold
            del masks
            chunk_boxes = batched_mask_to_box(binary)
            edge = is_box_near_crop_edge(chunk_boxes, crop_box, [0, 0, orig_w, orig_h])
            boxes.append(chunk_boxes)
            near_edge.append(edge)
            full = uncrop_masks(binary[~edge], crop_box, orig_h, orig_w)
            rles += [encode_rle(mask) for mask in full.cpu().numpy()]
        del data["low"]
        data["stability_score"] = torch.cat(stability)
        if stable:
            data.filter(torch.cat(stable))
        empty = torch.zeros((0, *im_size), dtype=torch.bool, device=data["iou_preds"].device)
        data["boxes"] = torch.cat(boxes) if boxes else batched_mask_to_box(empty)  # the library's dtypes, either way
        if near_edge and bool(torch.cat(near_edge).any()):
            data.filter(~torch.cat(near_edge))
        data["rles"] = rles


def _chunks(tensor: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """``tensor`` split along its first dimension; one empty piece for an empty tensor (the library's shapes)."""
    if len(tensor) == 0:
        yield tensor
        return
    yield from torch.split(tensor, size)
