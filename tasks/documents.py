"""The result documents a worker writes under ``jobs/{job_id}/``, and each job type's ``result.summary``, as models.

They describe what is stored, field by field (``extra="forbid"``: a field the worker adds without a change here is an
error in the tests that read real documents), and generate the documents' schemas in /openapi.json. A field that the
worker leaves out when it has no value is :data:`Omittable`: absent, never ``null``.

- segment, concept: ``result.json`` (:class:`SegmentResult`, :class:`ConceptResult`); embed: ``result.json``
  (:class:`EmbedResult`);
- track: ``summary.json`` (:class:`TrackSummary`, the track job's result document) and ``tracks.jsonl``, one
  :class:`TrackFrame` a processed frame;
- batch: ``result.json`` (:class:`BatchResult`), ``items.jsonl`` (one :data:`BatchItemLine` an item), and each
  item's own document (:data:`ItemDocument`) under ``items/{index:06d}/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from tasks.specs import SHA256_HEX, MediaRef, ModelId

T = TypeVar("T")


def _present(value: T) -> T:
    if value is None:
        raise ValueError("null: the field is left out when it has no value, never null")
    return value


Omittable = Annotated[T | SkipJsonSchema[None], AfterValidator(_present)]
"""Left out of the document when it has no value; never ``null`` (the schema says so: no ``null`` branch)."""


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """An omittable field's default (``None``) is the Python side's; the document has no such value."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


class Document(BaseModel):
    """Frozen; an unknown field is an error; attribute docstrings become the schema's descriptions."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, json_schema_extra=_no_null_defaults
    )


Embedding = Literal["memory", "shared", "miss"]
"""Where the job's image embedding came from: this worker's cache, the shared tier in object storage, or encoded."""
ImageId = Annotated[str, Field(pattern=SHA256_HEX)]


# Segment, concept and embed: result.json.


class ResultImage(Document):
    """The image the job read, at its original size."""

    width: int
    height: int
    image_id: ImageId
    """SHA-256 of the image file: a later job on the same image may pass ``{"image_id": …}``."""


class ResultCategory(Document):
    """One category of the job: a distinct label (segment) or phrase (concept), ``object`` for none, in prompt
    order; the same table whatever matched."""

    id: Annotated[int, Field(ge=1)]
    """COCO's ``category_id``: 1, 2, … (supervision's ``class_id`` is ``id - 1``)."""
    name: str
    class_id: Omittable[int] = None
    """The detector's class id, where a segment prompt gave one (the first given for the name)."""


class ResultBox(Document):
    """Absolute pixel corners of the original image, top-left origin."""

    x0: float
    y0: float
    x1: float
    y1: float


class Rle(Document):
    """COCO compressed RLE (pycocotools' encoding, column-major)."""

    size: tuple[int, int]
    """``[height, width]``."""
    counts: str


class MaskPolygon(Document):
    """One 8-connected component of a mask: its outer ring and the rings of its holes, each a flat
    ``[x0, y0, x1, y1, …]`` list of pixel coordinates."""

    outer: list[float]
    holes: list[list[float]]


class _Instance(Document):
    """What every instance of an image job carries."""

    index: Annotated[int, Field(ge=0)]
    """Position in ``instances``."""
    score: float
    bbox: ResultBox
    area: Annotated[int, Field(ge=0)]
    """Mask pixels."""
    category_id: Annotated[int, Field(ge=1)]
    """The ``id`` of its entry in ``categories``."""
    rle: Omittable[Rle] = None
    """The mask (output format ``rle``, the default)."""
    polygon: Omittable[list[MaskPolygon]] = None
    """The mask (output format ``polygon``)."""
    png: Omittable[str] = None
    """The mask's 1-bit PNG (output format ``png``): its file name beside the document (``masks/{index}.png``)."""


class SegmentInstance(_Instance):
    """One mask of a segment job: the best of its prompt's proposals (or each one, ``return_all_masks``)."""

    prompt_index: Annotated[int, Field(ge=0)]
    """The prompt it answers (0 for an unprompted job)."""
    label: Omittable[str] = None
    """The prompt's ``label``."""
    class_id: Omittable[int] = None
    """The prompt's ``class_id``."""
    detection_confidence: Omittable[float] = None
    """The prompt's ``detection_confidence``."""


class ConceptInstance(_Instance):
    """One instance that a concept job found, best first."""

    label: str | None
    """Its prompt's phrase (``null`` for an exemplar-only prompt)."""
    prompt_index: Annotated[int, Field(ge=0)]


class EverythingInstance(_Instance):
    """One mask an everything job found, in the generator's order; ``score`` is its ``predicted_iou``."""

    predicted_iou: float
    """The model's own estimate of the mask's quality (the generator's ``pred_iou_thresh`` filters on it)."""
    stability_score: float
    """IoU of the mask cut at ±``stability_score_offset`` (the generator's ``stability_score_thresh`` filters on it)."""
    point_coords: list[tuple[float, float]]
    """The point prompt it came from, ``[[x, y]]`` in image pixels."""
    crop_box: ResultBox
    """The crop it was found in (the whole image unless ``crop_n_layers``)."""


class SegmentResult(Document):
    """A segment job's ``result.json``."""

    image: ResultImage
    categories: list[ResultCategory]
    instances: list[SegmentInstance]


class ConceptResult(Document):
    """A concept job's ``result.json``."""

    image: ResultImage
    categories: list[ResultCategory]
    instances: list[ConceptInstance]


class EverythingResult(Document):
    """An everything job's ``result.json``."""

    image: ResultImage
    categories: list[ResultCategory]
    instances: list[EverythingInstance]


class EmbedResult(Document):
    """An embed job's ``result.json``: the image whose embedding is now cached, and by which model."""

    image: ResultImage
    model: ModelId


# Track: tracks.jsonl and summary.json.


class FrameObject(Document):
    """One object visible on a frame (an object whose mask is empty there is left out)."""

    id: int
    label: str | None
    score: float
    """The tracker's score of the mask on this frame."""
    bbox: ResultBox
    area: Annotated[int, Field(ge=0)]
    mask: Rle
    detection_score: Omittable[float] = None
    """The score of the detection that last seeded the object (re-seeding from ``detections``)."""
    polygon: Omittable[list[MaskPolygon]] = None
    """The mask as polygons (output format ``polygon``)."""


class TrackFrame(Document):
    """One line of ``tracks.jsonl``: a processed frame, in order, each exactly once."""

    frame: Annotated[int, Field(ge=0)]
    """The frame's number in the video."""
    time: float
    """Its time in seconds."""
    objects: list[FrameObject]


class TrackVideo(Document):
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    """Seconds."""


class TrackObjectSummary(Document):
    """What the job knows about one object id (``null`` frames: never visible)."""

    id: int
    label: str | None
    detection_score: float | None
    first_frame: int | None
    last_frame: int | None
    frames_visible: Annotated[int, Field(ge=0)]


class TrackJobSummary(Document):
    """A track job's ``result.summary``."""

    frames: Annotated[int, Field(ge=0)]
    """Frames processed."""
    objects_tracked: Annotated[int, Field(ge=0)]
    partial: bool
    """Canceled: the frames done before the cancel."""


class TrackSummary(TrackJobSummary):
    """A track job's result document, ``summary.json`` (its frames are ``tracks.jsonl``, lines of TrackFrame)."""

    video: TrackVideo
    resumed_from: int | None
    """The processed frame a later attempt resumed from (its worker was lost), else ``null``."""
    total_ms: float
    objects: list[TrackObjectSummary]


# Batch: result.json and items.jsonl.


class BatchItemError(Document):
    code: str
    message: str


class BatchFailure(Document):
    """A failed item."""

    index: Annotated[int, Field(ge=0)]
    name: str
    """The item's ``name``, else its media reference."""
    input: MediaRef
    error: BatchItemError


class BatchExports(Document):
    coco: Omittable[str] = None
    """``coco.json`` (``export: ["coco"]``)."""


class BatchJobSummary(Document):
    """A batch job's ``result.summary``."""

    total: Annotated[int, Field(ge=0)]
    succeeded: Annotated[int, Field(ge=0)]
    failed: Annotated[int, Field(ge=0)]
    not_run: Annotated[int, Field(ge=0)]
    """Items never run: the batch stopped (canceled, or ``max_failure_rate`` exceeded)."""
    failure_codes: dict[str, int]
    """Failed items by error code."""
    failures: list[BatchFailure]
    """The first 20 failures (``result.json`` lists them all)."""
    exports: BatchExports


class BatchResult(BatchJobSummary):
    """A batch job's ``result.json`` (also of a batch that failed or was canceled): every failure, in item order."""

    items: str
    """``items.jsonl``: one BatchItemLine an item, in order."""


class SegmentTimings(Document):
    model_ms: float
    total_ms: float


class ConceptTimings(Document):
    encode_ms: float
    detect_ms: float
    model_ms: float
    total_ms: float


class EverythingTimings(Document):
    encode_ms: float
    """The whole image's encode (0 on an embedding hit; crops are encoded within ``generate_ms``)."""
    generate_ms: float
    model_ms: float
    total_ms: float


class BatchItemSucceeded(Document):
    index: Annotated[int, Field(ge=0)]
    status: Literal["succeeded"]
    name: str
    document: str
    """Its result document (an ItemDocument, also served by ``GET /v1/jobs/{id}/items/{index}``), among ``files``."""
    timings: Omittable[SegmentTimings | ConceptTimings | EverythingTimings] = None
    """An image item's."""
    files: list[str]
    """Its files, relative to the batch's folder: ``items/{index:06d}/…``."""


class BatchItemFailed(Document):
    index: Annotated[int, Field(ge=0)]
    status: Literal["failed"]
    name: str
    input: MediaRef
    error: BatchItemError
    files: list[str]


class BatchItemNotRun(Document):
    index: Annotated[int, Field(ge=0)]
    status: Literal["not_run"]


BatchItemLine = Annotated[
    BatchItemSucceeded | BatchItemFailed | BatchItemNotRun,
    Field(discriminator="status", description="One line of a batch's items.jsonl: an item's outcome, in item order."),
]


# Job summaries (the job object's result.summary).


class _ImageSummary(Document):
    """What every summary of a job on one image carries."""

    image_id: ImageId
    embedding: Embedding


class EmbedJobSummary(_ImageSummary):
    """An embed job's ``result.summary``."""


class SegmentJobSummary(_ImageSummary):
    """A segment job's ``result.summary``."""

    instances: Annotated[int, Field(ge=0)]
    timings: SegmentTimings
    instances_per_label: Omittable[dict[str, int]] = None
    """Instances by their prompt's ``label``, where prompts have labels."""


class ConceptJobSummary(_ImageSummary):
    """A concept job's ``result.summary``."""

    instances: Annotated[int, Field(ge=0)]
    instances_per_prompt: list[int]
    timings: ConceptTimings


class EverythingJobSummary(_ImageSummary):
    """An everything job's ``result.summary``."""

    instances: Annotated[int, Field(ge=0)]
    candidates_upsampled: Annotated[int, Field(ge=0)]
    """Candidates that passed the predicted-IoU filter and were upsampled to full size (the costly part)."""
    timings: EverythingTimings


ResultDocument = Annotated[
    SegmentResult | ConceptResult | EverythingResult | EmbedResult | TrackSummary | BatchResult,
    Field(
        description="GET /v1/jobs/{id}/result, by the job's type: segment: SegmentResult; concept: ConceptResult; "
        "everything: EverythingResult; embed: EmbedResult (each its result.json); track: TrackSummary (its summary.json; the frames are in "
        "tracks.jsonl, one TrackFrame a line); batch: BatchResult (its result.json; items.jsonl has one BatchItemLine "
        "an item). A segment and a concept document share a shape, so this is anyOf, not oneOf."
    ),
]
ItemDocument = Annotated[
    SegmentResult | ConceptResult | EverythingResult | TrackSummary,
    Field(
        description="GET /v1/jobs/{id}/items/{index}, by the batch template's type: segment: SegmentResult; concept: "
        "ConceptResult; everything: EverythingResult (the item's result.json); track: TrackSummary (the item's "
        "summary.json)."
    ),
]
JobSummary = Annotated[
    SegmentJobSummary | ConceptJobSummary | EverythingJobSummary | EmbedJobSummary | TrackJobSummary | BatchJobSummary,
    Field(
        description="The job object's result.summary, by the job's type: SegmentJobSummary, ConceptJobSummary, "
        "EverythingJobSummary, EmbedJobSummary, TrackJobSummary, BatchJobSummary (a summary matches exactly one of "
        "them)."
    ),
]

NAMED: Mapping[str, Any] = {
    "ResultDocument": ResultDocument,
    "ItemDocument": ItemDocument,
    "JobSummary": JobSummary,
    "TrackFrame": TrackFrame,
    "BatchItemLine": BatchItemLine,
}
"""Schemas /openapi.json names (the models they use are named after their classes): the routes' answers, the job
object's summary, and the lines of the JSONL files that are only downloaded."""
