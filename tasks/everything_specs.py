"""The ``everything`` job: every object mask of one image, with no prompt (SAM2's automatic mask generator).

The generator's parameters keep the names and defaults of Meta's ``SAM2AutomaticMaskGenerator``; the bounds keep a
job's work and result sane (a 128-point side is 16 384 points; three crop layers multiply an image's points by 85).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tasks.specs import (
    CachedImage,
    ImageModel,
    ImageRef,
    JobFields,
    ModelId,
    OutputOptions,
    check_drawable,
    without_logits,
)

MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 256
MAX_CROP_LAYERS = 3
MAX_POINTS_PER_JOB = 65_536
"""Points over every crop layer: ``points_per_side²`` on the image, ``(points_per_side / factor^i)²`` on each of the
``4^i`` crops of layer ``i``."""
MAX_MASKS = 10_000
Fraction = Annotated[float, Field(ge=0, le=1)]


class EverythingTemplate(ImageModel):
    """An everything job without its image (a batch applies it to many)."""

    type: Literal["everything"]
    points_per_side: Annotated[int, Field(ge=1, le=MAX_POINTS_PER_SIDE)] = 32
    """Points sampled along each side of the image: ``points_per_side²`` point prompts."""
    points_per_batch: Annotated[int, Field(ge=1, le=MAX_POINTS_PER_BATCH)] = 64
    """Points decoded together (progress and cancel go by these batches)."""
    pred_iou_thresh: Fraction = 0.8
    """Keep masks whose predicted IoU is above this."""
    stability_score_thresh: Fraction = 0.95
    """Keep masks whose stability score (IoU of the mask cut at ±offset) is at least this."""
    stability_score_offset: Annotated[float, Field(ge=0, le=100)] = 1.0
    box_nms_thresh: Fraction = 0.7
    """Box IoU above which the lower-IoU of two masks of one crop is dropped (1: none is)."""
    crop_nms_thresh: Fraction = 0.7
    crop_overlap_ratio: Annotated[float, Field(ge=0, lt=1)] = 512 / 1500
    crop_n_points_downscale_factor: Annotated[int, Field(ge=1, le=8)] = 1
    crop_n_layers: Annotated[int, Field(ge=0, le=MAX_CROP_LAYERS)] = 0
    """Run again on overlapping crops: layer ``i`` has ``4^i`` crops (each encoded: no cache). Declared after the
    fields it multiplies, so that its validator sees them."""
    min_mask_region_area: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    """Fill holes and remove specks smaller than this many pixels (at the decoder's resolution, as sam2 does)."""
    use_m2m: bool = False
    """One refinement step per mask, from its own low-res logits."""
    multimask_output: bool = True
    max_masks: Annotated[int, Field(ge=1, le=MAX_MASKS)] | None = None
    """Keep only the best N by predicted IoU (ties: the generator's order); all of them when absent."""
    output: Annotated[OutputOptions, Field(default_factory=OutputOptions)]

    @field_validator("model")
    @classmethod
    def _sam2_model(cls, model: ModelId) -> ModelId:
        if model == ModelId.SAM3:
            raise ValueError("everything runs on the SAM2.1 models; SAM3's library has no automatic mask generator")
        return model

    @field_validator("output")
    @classmethod
    def _no_logits(cls, output: OutputOptions) -> OutputOptions:
        return without_logits(output)

    @field_validator("crop_n_layers")
    @classmethod
    def _bounded_work(cls, layers: int, info: ValidationInfo) -> int:
        side, factor = info.data.get("points_per_side"), info.data.get("crop_n_points_downscale_factor")
        if side is None or factor is None:  # already invalid themselves
            return layers
        points = sum(4**layer * int(side / factor**layer) ** 2 for layer in range(layers + 1))
        if points > MAX_POINTS_PER_JOB:
            raise ValueError(
                f"{layers} crop layers with points_per_side {side} and crop_n_points_downscale_factor {factor} make "
                f"{points} point prompts; at most {MAX_POINTS_PER_JOB}"
            )
        return layers


class EverythingSpec(EverythingTemplate, JobFields):
    """Every object mask of one image, found from a grid of point prompts (SAM2's automatic mask generator)."""

    image: ImageRef

    @field_validator("image")
    @classmethod
    def _pixels(cls, image: ImageRef) -> ImageRef:
        if isinstance(image, CachedImage):  # crops are cut from the pixels
            raise ValueError("everything needs the image itself, not an image_id (its embedding is still reused)")
        return image

    @model_validator(mode="after")
    def _drawable(self) -> EverythingSpec:
        check_drawable(self.image, self.output)
        return self
