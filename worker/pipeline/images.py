"""The jobs on one image: ``embed``, ``segment`` (visual prompts), ``concept`` (phrases and exemplars) and
``everything`` (every mask, from a grid of points).

Each obtains the image's embedding first: from this process's cache, else from the shared tier in object storage
(written by any worker), else by fetching, decoding and encoding the image. A batch encodes a group of images
together beforehand (``encode_together``); each item's own run then finds its embedding in the cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

from storage import keys
from storage.base import ObjectNotFoundError
from tasks.errors import (
    EmbeddingNotFoundError,
    MaskInputMismatchError,
    MaskInputNotFoundError,
    SamqError,
    StorageUnavailableError,
)
from tasks.everything_specs import EverythingSpec, EverythingTemplate
from tasks.jobs import Job, JobResult
from tasks.specs import (
    Base64Image,
    CachedImage,
    ConceptSpec,
    ConceptTemplate,
    EmbedSpec,
    ImageRef,
    MediaRef,
    Prompt,
    S3Image,
    SegmentSpec,
    SegmentTemplate,
    UploadImage,
    UrlImage,
)
from worker.images import decode_image
from worker.pipeline.context import PROGRESS_SECONDS, Checkpoint, Finish, Runtime
from worker.pipeline.objects import JobObjects
from worker.pipeline.outputs import (
    LOW_RES_LOGITS,
    write_concept_result,
    write_embed_result,
    write_everything_result,
    write_segment_result,
)
from worker.pipeline.overlap import media_key
from worker.runners.concept import ConceptQuery, Sam3Embedding
from worker.runners.image import Embedding, Encoder, ImageEmbedding, ImageRunner, VisualPrompt

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Embedding)
CONCEPT_EMBEDDINGS = "sam3_concept"
"""Cache key kind of SAM3 concept-model features (the tracker's are keyed ``sam3``, like any model id)."""


@dataclass(frozen=True)
class Obtained(Generic[E]):
    """An image embedding, its image's content hash, and where it came from."""

    embedding: E
    image_id: str
    source: str
    """``memory`` (this process), ``shared`` (object storage, written by any worker) or ``miss`` (encoded now)."""
    encode_ms: float = 0.0
    data: bytes | None = None
    """The image file, when it was read (not for an ``image_id``, nor for an upload whose embedding this process
    had)."""


def run_embed(job: Job, spec: EmbedSpec, rt: Runtime, checkpoint: Checkpoint) -> Finish:
    runner = rt.models.get(spec.model.value)
    got = _obtain(job, spec.image, spec.model.value, runner, _image_embedding(runner), rt, checkpoint)

    def finish() -> JobResult:
        sharing = None
        if got.source != "shared":  # into the shared tier, while the result is written
            key = keys.embedding(job.tenant, spec.model.value, runner.image_size, got.image_id)
            data = got.embedding.to_bytes()
            sharing = rt.objects.start(lambda: rt.objects.put(key, data))
        result = write_embed_result(rt.objects, job, got.image_id, got.embedding.orig_hw, got.source)
        if sharing is not None:
            sharing.result()
        return result

    return finish


def run_segment(job: Job, spec: SegmentSpec, rt: Runtime, checkpoint: Checkpoint, keep_logits: bool = True) -> Finish:
    """``keep_logits``: also store the low-res logits that a later ``mask_input`` refines."""
    started = time.perf_counter()
    runner = rt.models.get(spec.model.value)
    got = _obtain(job, spec.image, spec.model.value, runner, _image_embedding(runner), rt, checkpoint)
    # no prompt at all: the model's most prominent mask (Meta's predictor called with no prompt)
    prompts = [_visual_prompt(p, job, rt.objects, runner.low_res_size) for p in spec.prompts] or [VisualPrompt()]
    checkpoint()
    decode_started = time.perf_counter()
    formats = spec.output.formats
    masks = runner.predict(got.embedding, prompts, spec.multimask_output, spec.return_all_masks, "logits" in formats)
    decode_ms = (time.perf_counter() - decode_started) * 1000
    checkpoint()

    def finish() -> JobResult:
        image = _annotated_image(job, spec, got, rt)
        result = write_segment_result(
            rt.objects, job, spec, masks, got.embedding.orig_hw, got.image_id, got.source, keep_logits, image
        )
        result.summary["timings"] = {
            "model_ms": round(got.encode_ms + decode_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),  # the worker's whole job, writes included
        }
        return result

    return finish


def run_concept(job: Job, spec: ConceptSpec, rt: Runtime, checkpoint: Checkpoint) -> Finish:
    """One image encode for every prompt; the embedding stays in this process's cache for later concept jobs."""
    started = time.perf_counter()
    runner = rt.models.get_concept(spec.model.value)
    device = runner.device
    got = _obtain(
        job, spec.image, CONCEPT_EMBEDDINGS, runner, lambda data: Sam3Embedding.from_bytes(data, device), rt, checkpoint
    )
    queries = [
        ConceptQuery(
            text=p.text,
            boxes=[(b.x0, b.y0, b.x1, b.y1) for b in p.boxes],
            box_labels=[b.positive for b in p.boxes],
            threshold=spec.threshold if p.threshold is None else p.threshold,
        )
        for p in spec.prompts
    ]
    checkpoint()
    detect_started = time.perf_counter()
    found = runner.detect(got.embedding, queries, max_detections=spec.max_detections, nms_iou=spec.nms_iou)
    detect_ms = (time.perf_counter() - detect_started) * 1000
    checkpoint()

    def finish() -> JobResult:
        image = _annotated_image(job, spec, got, rt)
        orig_hw = got.embedding.orig_hw
        result = write_concept_result(rt.objects, job, spec, found, orig_hw, got.image_id, got.source, image)
        result.summary["timings"] = {
            "encode_ms": round(got.encode_ms, 3),
            "detect_ms": round(detect_ms, 3),
            "model_ms": round(got.encode_ms + detect_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        return result

    return finish


def run_everything(job: Job, spec: EverythingSpec, rt: Runtime, checkpoint: Checkpoint) -> Finish:
    """Every mask of the image. The whole image's embedding comes from the cache segment jobs share; the crops of
    ``crop_n_layers`` are encoded. Progress counts point batches; a cancel stops the job between two of them."""
    from worker.runners.sam2_everything import GeneratorParams  # loaded with the runner, not with the pipeline

    started = time.perf_counter()
    generator = rt.models.get_everything(spec.model.value)
    runner = generator.image_runner
    got = _obtain(job, spec.image, spec.model.value, runner, _image_embedding(runner), rt, checkpoint)
    ref = spec.image
    assert not isinstance(ref, CachedImage)  # refused by the spec: the crops need the pixels
    data = got.data if got.data is not None else _fetch(ref, job.tenant, rt)  # a memory hit read none
    image = decode_image(data, rt.max_image_pixels)
    reported = [0.0]

    def between(done: int, total: int) -> None:
        checkpoint()
        if time.monotonic() - reported[0] >= PROGRESS_SECONDS or done == total:
            rt.store.set_progress(job.id, job.attempts, done, total, "point_batches")
            reported[0] = time.monotonic()

    generate_started = time.perf_counter()
    params = GeneratorParams(**spec.model_dump(include=set(GeneratorParams.__dataclass_fields__)))
    found = generator.generate(image, params, got.embedding, between).best(spec.max_masks)
    generate_ms = (time.perf_counter() - generate_started) * 1000
    checkpoint()

    def finish() -> JobResult:
        result = write_everything_result(rt.objects, job, spec, found, got.image_id, got.source, image)
        result.summary["timings"] = {
            "encode_ms": round(got.encode_ms, 3),
            "generate_ms": round(generate_ms, 3),
            "model_ms": round(got.encode_ms + generate_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        return result

    return finish


def encoder_of(spec: SegmentTemplate | ConceptTemplate | EverythingTemplate, rt: Runtime) -> Encoder[Embedding]:
    """The (loaded) runner that encodes the images of ``spec``'s kind of job (a template or a job's spec)."""
    if isinstance(spec, ConceptTemplate):
        return rt.models.get_concept(spec.model.value)
    return rt.models.get(spec.model.value)


def encode_together(
    job: Job,
    spec: SegmentTemplate | ConceptTemplate | EverythingTemplate,
    media: Sequence[MediaRef],
    rt: Runtime,
    checkpoint: Checkpoint,
) -> None:
    """Fetch, decode and encode images of ``spec``'s kind in one encoder call, into the embedding cache, where each
    item's own run finds them; their bytes are kept in ``rt.ahead`` for the items' own runs. Any error here is left
    for the item's own run to meet again and record."""
    encoder = encoder_of(spec, rt)
    kind = CONCEPT_EMBEDDINGS if isinstance(spec, ConceptTemplate) else spec.model.value
    cache_keys: list[str] = []
    images: list[npt.NDArray[np.uint8]] = []
    for ref in media:
        try:
            data = _fetch(ref, job.tenant, rt)
            rt.ahead.keep(media_key(job.tenant, ref.model_dump_json()), data)
            key = keys.embedding(job.tenant, kind, encoder.image_size, hashlib.sha256(data).hexdigest())
            if key in cache_keys or rt.embeddings.get(key) is not None:
                continue
            images.append(decode_image(data, rt.max_image_pixels))
            cache_keys.append(key)
        except SamqError:
            continue
    if len(images) >= 2:
        checkpoint()
        for key, embedding in zip(cache_keys, encoder.encode_batch(images), strict=True):
            rt.embeddings.put(key, embedding)


def read_ahead(job: Job, rt: Runtime) -> None:
    """Start the reads ``job`` will begin with, into ``rt.ahead``: its image and, where the upload's record names the
    image's hash and the model is loaded, its embedding's shared-tier entry; nothing when this process holds that
    embedding (or for a job of another type). Called on the I/O threads, ahead of the job (``worker.pipeline.overlap``).
    """
    spec = job.spec
    if not isinstance(spec, SegmentSpec | EmbedSpec | ConceptSpec | EverythingSpec) or isinstance(
        spec.image, CachedImage
    ):
        return
    image, tenant = spec.image, job.tenant
    concept = isinstance(spec, ConceptSpec)
    size = rt.models.input_size(spec.model.value, concept=concept)
    digest = rt.media.digest(image, tenant)
    if digest is not None and size is not None:
        key = keys.embedding(tenant, CONCEPT_EMBEDDINGS if concept else spec.model.value, size, digest)
        if key in rt.embeddings:
            return
        rt.ahead.start(key, lambda: rt.objects.get(key))
    rt.ahead.start(media_key(tenant, image.model_dump_json()), lambda: rt.media.fetch(image, tenant))


def _fetch(image: UrlImage | Base64Image | UploadImage | S3Image, tenant: str, rt: Runtime) -> bytes:
    """The media's bytes: read ahead (``read_ahead``, a batched encode), else read now."""
    read_early = rt.ahead.take(media_key(tenant, image.model_dump_json()))
    return read_early.result() if read_early is not None else rt.media.fetch(image, tenant)


def _image_embedding(runner: ImageRunner) -> Callable[[bytes], ImageEmbedding]:
    device = runner.device
    return lambda data: ImageEmbedding.from_bytes(data, device)


def _obtain(
    job: Job,
    image: ImageRef,
    kind: str,
    encoder: Encoder[E],
    load: Callable[[bytes], E],
    rt: Runtime,
    checkpoint: Checkpoint,
) -> Obtained[E]:
    """The image's embedding of ``kind`` (a model id): from either cache tier, else fetched, decoded, encoded."""
    if isinstance(image, CachedImage):
        key = keys.embedding(job.tenant, kind, encoder.image_size, image.image_id)
        embedding, source = _cached_embedding(key, rt, load)
        if embedding is None:
            raise EmbeddingNotFoundError(
                f"no cached embedding for image_id {image.image_id} and model {job.model}; "
                "run an embed job with this model first"
            )
        return Obtained(embedding, image.image_id, source)
    digest = rt.media.digest(image, job.tenant)
    if digest is None:  # the bytes tell
        data = _fetch(image, job.tenant, rt)
        image_id = hashlib.sha256(data).hexdigest()
        key = keys.embedding(job.tenant, kind, encoder.image_size, image_id)
        embedding, source = _cached_embedding(key, rt, load)
    else:  # an upload's record tells: ask the cache before the image is read, and the shared tier while it is
        image_id, key = digest, keys.embedding(job.tenant, kind, encoder.image_size, digest)
        found = rt.embeddings.get(key)
        if found is not None:
            return Obtained(cast(E, found), image_id, "memory")
        reading = rt.ahead.take(media_key(job.tenant, image.model_dump_json())) or rt.objects.start(
            lambda: rt.media.fetch(image, job.tenant)
        )
        embedding, source = _cached_embedding(key, rt, load)
        data = reading.result()
    if embedding is not None:
        return Obtained(embedding, image_id, source, data=data)
    decoded = decode_image(data, rt.max_image_pixels)
    checkpoint()
    started = time.perf_counter()
    embedding = encoder.encode(decoded)
    rt.embeddings.put(key, embedding)
    return Obtained(embedding, image_id, "miss", (time.perf_counter() - started) * 1000, data)


def _annotated_image(
    job: Job, spec: SegmentSpec | ConceptSpec, got: Obtained[E], rt: Runtime
) -> npt.NDArray[np.uint8] | None:
    """The decoded image to draw ``annotated.png`` on, when the job asks for it (the spec refuses ``image_id``)."""
    if not spec.output.annotated or isinstance(spec.image, CachedImage):
        return None
    data = got.data if got.data is not None else _fetch(spec.image, job.tenant, rt)  # a memory hit read none
    return decode_image(data, rt.max_image_pixels)


def _cached_embedding(key: str, rt: Runtime, load: Callable[[bytes], E]) -> tuple[E | None, str]:
    found = rt.embeddings.get(key)
    if found is not None:
        return cast(E, found), "memory"  # keys carry the model kind, so the entry is of this kind
    read_early = rt.ahead.take(key)
    try:
        data = read_early.result() if read_early is not None else rt.objects.get(key)
    except ObjectNotFoundError:
        return None, "miss"
    except StorageUnavailableError as e:
        log.warning("shared embedding tier unreadable (%s); encoding instead", e.message)
        return None, "miss"
    try:
        embedding = load(data)
    except ValueError as e:
        log.warning("shared embedding %s is unreadable (%s); encoding instead", key, e)
        return None, "miss"
    rt.embeddings.put(key, embedding)
    return embedding, "shared"


def _visual_prompt(prompt: Prompt, job: Job, objects: JobObjects, low_res_size: int) -> VisualPrompt:
    coords = np.array([[p.x, p.y] for p in prompt.points], dtype=np.float32) if prompt.points else None
    labels = np.array([int(p.positive) for p in prompt.points], dtype=np.int32) if prompt.points else None
    box = (
        np.array([prompt.box.x0, prompt.box.y0, prompt.box.x1, prompt.box.y1], dtype=np.float32) if prompt.box else None
    )
    mask_input = None
    if prompt.mask_input is not None:
        mask_input = _load_mask_input(job.tenant, prompt.mask_input.job, prompt.mask_input.index, objects, low_res_size)
    return VisualPrompt(point_coords=coords, point_labels=labels, box=box, mask_input=mask_input)


def _load_mask_input(tenant: str, job_id: str, index: int, objects: JobObjects, side: int) -> npt.NDArray[np.float32]:
    try:
        stored = objects.get(keys.job_file(tenant, job_id, LOW_RES_LOGITS))
    except ObjectNotFoundError as e:
        raise MaskInputNotFoundError(f"job {job_id} has no stored low-res masks (not a succeeded segment job)") from e
    logits = np.load(io.BytesIO(stored), allow_pickle=False)
    if index >= len(logits):
        raise MaskInputNotFoundError(
            f"job {job_id} has {len(logits)} instances; mask_input index {index} is out of range"
        )
    if logits.shape[1:] != (side, side):
        raise MaskInputMismatchError(
            f"job {job_id}'s masks are {logits.shape[1]}x{logits.shape[2]} logits; this model takes {side}x{side} "
            "(refine with the same model and input size)"
        )
    return np.asarray(logits[index : index + 1], dtype=np.float32)
