"""samq result documents in Roboflow's response shapes (``inference/core/entities/responses/sam2.py``, ``sam3.py``).

Masks are never recomputed here: ``rle`` passes samq's COCO RLE through unchanged, ``json``/``polygon`` reshape
samq's polygons into Roboflow's list of polygons, each a list of integer ``[x, y]`` points, the form
``cv2.fillPoly`` and ``cv2.polylines`` take. Roboflow lists only outer contours; samq lists each component's
outer ring followed by the rings of its holes, so that ``cv2.fillPoly`` (which fills by parity) draws the holes
too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from api.roboflow.requests import ConceptRequest, MaskFormat


class Prediction(BaseModel):
    """One mask: ``polygon`` (a list of ``[[x, y], …]`` rings) or ``rle`` (COCO RLE, string counts)."""

    masks: list[list[list[int]]] | dict[str, Any]
    confidence: float
    format: Literal["polygon", "rle"]


class EmbeddingResponse(BaseModel):
    image_id: str
    time: float


class SegmentationResponse(BaseModel):
    """One prediction per prompt, in prompt order (one for an unprompted call)."""

    predictions: list[Prediction]
    time: float


class PromptEcho(BaseModel):
    prompt_index: int
    type: Literal["text", "visual"]
    text: str | None
    num_boxes: int


class PromptResult(BaseModel):
    prompt_index: int
    echo: PromptEcho
    predictions: list[Prediction]


class ConceptResponse(BaseModel):
    """One entry per prompt, in request order."""

    prompt_results: list[PromptResult]
    time: float


RESPONSE_MODELS = (EmbeddingResponse, SegmentationResponse, ConceptResponse)
"""The response bodies, for /openapi.json (the functions below build them as plain dicts: a mask's polygons can
hold many thousand points, not worth validating again)."""


def segment_response(document: dict[str, Any], mask_format: MaskFormat, seconds: float) -> dict[str, Any]:
    """One prediction per prompt, in prompt order (the best candidate of each)."""
    instances = sorted(document["instances"], key=lambda instance: instance["prompt_index"])
    return {"predictions": [_prediction(instance, mask_format) for instance in instances], "time": seconds}


def concept_response(
    document: dict[str, Any], request: ConceptRequest, mask_format: MaskFormat, seconds: float
) -> dict[str, Any]:
    """One entry per prompt, in request order, also when it found nothing; its instances best first."""
    found: list[list[dict[str, Any]]] = [[] for _ in request.prompts]
    for instance in document["instances"]:
        found[instance["prompt_index"]].append(_prediction(instance, mask_format))
    results = [
        {"prompt_index": i, "echo": prompt.echo(i), "predictions": found[i]} for i, prompt in enumerate(request.prompts)
    ]
    return {"prompt_results": results, "time": seconds}


def embed_response(image_id: str, seconds: float) -> dict[str, Any]:
    return {"image_id": image_id, "time": seconds}


def roboflow_polygons(polygons: Sequence[Mapping[str, Any]]) -> list[list[list[int]]]:
    """samq polygons (flat outer and hole rings) as Roboflow's list of ``[[x, y], …]`` rings; ``[[]]`` when the
    mask is empty, as Roboflow answers."""
    rings = [ring for polygon in polygons for ring in (polygon["outer"], *polygon["holes"])]
    return [[[round(ring[i]), round(ring[i + 1])] for i in range(0, len(ring), 2)] for ring in rings] or [[]]


def _prediction(instance: dict[str, Any], mask_format: MaskFormat) -> dict[str, Any]:
    if mask_format == "rle":
        return {"masks": instance["rle"], "confidence": instance["score"], "format": "rle"}
    return {"masks": roboflow_polygons(instance["polygon"]), "confidence": instance["score"], "format": "polygon"}
