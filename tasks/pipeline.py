"""Pipeline functions: one attempt of one job, from the record to the stored result.

Celery never appears here: the thin task in ``tasks.celery_tasks`` builds a ``Runtime`` once per worker process and
calls ``execute``. Unit tests pass fakes for every collaborator.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

import numpy as np

from storage import keys
from storage.base import ObjectNotFoundError, ObjectStore
from storage.base import StorageError as BackendError
from tasks.errors import (
    EmbeddingNotFoundError,
    JobTimeoutError,
    MaskInputMismatchError,
    MaskInputNotFoundError,
    SamqError,
    StorageUnavailableError,
    TransientError,
)
from tasks.jobs import Job, JobResult
from tasks.lease import JobCanceledError, Lease, LeaseLostError
from tasks.outputs import LOW_RES_LOGITS, write_concept_result, write_embed_result, write_segment_result
from tasks.specs import (
    Base64Image,
    BatchSpec,
    CachedImage,
    ConceptSpec,
    EmbedSpec,
    ImageRef,
    Prompt,
    S3Image,
    SegmentSpec,
    TrackSpec,
    UploadImage,
    UrlImage,
)
from tasks.store import JobStore
from tasks.track_results import TrackResults
from tasks.tracking import TrackContext, TrackLimits, run_track
from worker.embedding_cache import EmbeddingCache
from worker.images import decode_image
from worker.results import InstanceMasks
from worker.runners.sam2_image import ImageEmbedding, VisualPrompt
from worker.runners.video import VideoTracker

if TYPE_CHECKING:  # the concept runner pulls in transformers: imported where it runs
    from tasks.batch_store import BatchContext
    from worker.runners.sam3_concept import ConceptInstances, ConceptQuery, Sam3Embedding

log = logging.getLogger(__name__)


class Embedding(Protocol):
    """What every image embedding offers (``ImageEmbedding``, ``Sam3Embedding``)."""

    @property
    def orig_hw(self) -> tuple[int, int]: ...

    @property
    def nbytes(self) -> int: ...

    def to_bytes(self) -> bytes: ...


E = TypeVar("E", bound=Embedding)
E_co = TypeVar("E_co", bound=Embedding, covariant=True)


class Encoder(Protocol[E_co]):
    """The image encoder side of a runner: its input size, device, and one image → one embedding."""

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> str: ...

    def encode(self, image: np.ndarray) -> E_co: ...

    def encode_batch(self, images: Sequence[np.ndarray]) -> Sequence[E_co]: ...


class ImageRunner(Encoder[ImageEmbedding], Protocol):
    """Visual prompts → masks (``Sam2ImageRunner``, ``Sam3TrackerRunner``)."""

    @property
    def low_res_size(self) -> int: ...

    def predict(
        self, embedding: ImageEmbedding, prompts: list[VisualPrompt], multimask_output: bool, return_all_masks: bool
    ) -> InstanceMasks: ...


class ConceptRunner(Encoder["Sam3Embedding"], Protocol):
    """Phrases and exemplar boxes → every instance (``Sam3ConceptRunner``)."""

    def detect(
        self, embedding: Sam3Embedding, queries: Sequence[ConceptQuery], *, max_detections: int, nms_iou: float | None
    ) -> ConceptInstances: ...


class Media(Protocol):
    """Media references → bytes (``tasks.media.MediaSource``)."""

    def fetch(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> bytes: ...


class ModelSource(Protocol):
    def get(self, model_id: str) -> ImageRunner: ...

    def get_concept(self, model_id: str) -> ConceptRunner: ...

    def get_video(self, model_id: str) -> VideoTracker: ...


Resend = Callable[[Job, float], None]
"""Re-send a job's message after ``delay`` seconds (a transient failure's retry)."""


@dataclass
class Runtime:
    """Everything a worker process keeps warm between jobs."""

    store: JobStore
    objects: ObjectStore
    media: Media
    models: ModelSource
    embeddings: EmbeddingCache[Embedding]
    resend: Resend
    max_image_pixels: int
    max_attempts: int
    lease_interval: float
    retry_backoff: float
    timeout_error: type[BaseException] = field(default=TimeoutError)
    track: TrackLimits = field(default_factory=TrackLimits)
    batch: BatchContext | None = None
    """Batch jobs' Redis state and shard sending (None where no batch runs, e.g. unit tests)."""


Checkpoint = Callable[[], None]
CONCEPT_EMBEDDINGS = "sam3_concept"
"""Cache key kind of SAM3 concept-model features (the tracker's are keyed ``sam3``, like any model id)."""


def execute(job_id: str, rt: Runtime) -> None:
    """Run one attempt of ``job_id``. Never raises for anything a job can do: failures become job state."""
    job = rt.store.start(job_id)
    if job is None:
        log.info("job %s: nothing to run (terminal, unknown, or running elsewhere); skipped", job_id)
        return
    attempt = job.attempts
    log.info("job %s: attempt %d started", job_id, attempt)
    handed_off = False
    with Lease.of_attempt(rt.store, job_id, attempt, rt.lease_interval) as lease:
        try:
            result = run(job, rt, lease.checkpoint)
        except JobCanceledError as e:
            rt.store.cancel_running(job_id, attempt, e.partial)
            log.info("job %s: canceled", job_id)
        except LeaseLostError:
            log.warning("job %s: attempt %d was fenced off; its work is discarded", job_id, attempt)
        except TransientError as e:
            _retry_or_fail(job, e, rt)
        except SamqError as e:
            rt.store.fail(job_id, attempt, e)
            log.info("job %s: failed with %s: %s", job_id, e.code, e.message)
        except rt.timeout_error as e:
            rt.store.fail(job_id, attempt, JobTimeoutError(f"the job ran past its time limit ({e})"))
        except Exception:
            log.exception("job %s: unexpected error", job_id)
            rt.store.fail(job_id, attempt, SamqError("internal error while running the job; see the worker log"))
        else:
            if result is None:
                handed_off = True
            elif not rt.store.succeed(job_id, attempt, result):
                log.warning("job %s: attempt %d finished but was fenced off", job_id, attempt)
    if handed_off:  # a fanned-out batch stays running: its shards' reconcile watches it, not the reaper
        rt.store.hand_off(job_id)


def _retry_or_fail(job: Job, error: TransientError, rt: Runtime) -> None:
    if job.attempts < rt.max_attempts and rt.store.requeue(job.id, job.attempts, error):
        delay = rt.retry_backoff * 2 ** (job.attempts - 1)
        log.warning("job %s: %s (%s); retrying in %.1fs", job.id, error.code, error.message, delay)
        rt.resend(job, delay)
    else:
        rt.store.fail(job.id, job.attempts, error)


def run(job: Job, rt: Runtime, checkpoint: Checkpoint) -> JobResult | None:
    """The job's result; None for a batch, whose attempt only fans out (its shards finish it)."""
    spec = job.spec
    if isinstance(spec, BatchSpec):
        from tasks.batch import expand  # tasks.batch builds on this module

        assert rt.batch is not None, "batch jobs need Runtime.batch"
        expand(job, spec, rt, rt.batch, checkpoint)
        return None
    if isinstance(spec, SegmentSpec):
        return run_segment(job, spec, rt, checkpoint)
    if isinstance(spec, ConceptSpec):
        return run_concept(job, spec, rt, checkpoint)
    if isinstance(spec, TrackSpec):
        return run_track(job, spec, track_context(job, spec, rt), checkpoint)
    return run_embed(job, spec, rt, checkpoint)


@dataclass(frozen=True)
class Obtained(Generic[E]):
    """An image embedding, its image's content hash, and where it came from."""

    embedding: E
    image_id: str
    source: str
    """``memory`` (this process), ``shared`` (object storage, written by any worker) or ``miss`` (encoded now)."""
    encode_ms: float = 0.0


def run_embed(job: Job, spec: EmbedSpec, rt: Runtime, checkpoint: Checkpoint) -> JobResult:
    runner = rt.models.get(spec.model.value)
    got = _obtain(job, spec.image, spec.model.value, runner, _image_embedding(runner), rt, checkpoint)
    if got.source != "shared":
        key = keys.embedding(job.tenant, spec.model.value, runner.image_size, got.image_id)
        _put(rt.objects, key, got.embedding.to_bytes())
    return write_embed_result(rt.objects, job, got.image_id, got.embedding.orig_hw, got.source)


def run_segment(
    job: Job, spec: SegmentSpec, rt: Runtime, checkpoint: Checkpoint, keep_logits: bool = True
) -> JobResult:
    """``keep_logits``: also store the low-res logits that a later ``mask_input`` refines (not for batch items)."""
    started = time.perf_counter()
    runner = rt.models.get(spec.model.value)
    got = _obtain(job, spec.image, spec.model.value, runner, _image_embedding(runner), rt, checkpoint)
    prompts = [_visual_prompt(p, job, rt.objects, runner.low_res_size) for p in spec.prompts]
    checkpoint()
    decode_started = time.perf_counter()
    masks = runner.predict(got.embedding, prompts, spec.multimask_output, spec.return_all_masks)
    decode_ms = (time.perf_counter() - decode_started) * 1000
    checkpoint()
    result = write_segment_result(
        rt.objects, job, spec, masks, got.embedding.orig_hw, got.image_id, got.source, keep_logits=keep_logits
    )
    result.summary["timings"] = {
        "model_ms": round(got.encode_ms + decode_ms, 3),
        "total_ms": round((time.perf_counter() - started) * 1000, 3),  # the worker's whole job, writes included
    }
    return result


def run_concept(job: Job, spec: ConceptSpec, rt: Runtime, checkpoint: Checkpoint) -> JobResult:
    """One image encode for every prompt; the embedding stays in this process's cache for later concept jobs."""
    from worker.runners.sam3_concept import ConceptQuery, Sam3Embedding

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
    result = write_concept_result(rt.objects, job, spec, found, got.embedding.orig_hw, got.image_id, got.source)
    result.summary["timings"] = {
        "encode_ms": round(got.encode_ms, 3),
        "detect_ms": round(detect_ms, 3),
        "model_ms": round(got.encode_ms + detect_ms, 3),
        "total_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    return result


def track_context(job: Job, spec: TrackSpec, rt: Runtime) -> TrackContext:
    limits = rt.track

    def results(clock: Callable[[int], tuple[int, float]], polygons: bool) -> TrackResults:
        return TrackResults(
            rt.objects,
            job,
            clock,
            polygons=polygons,
            chunk_frames=limits.chunk_frames,
            chunk_seconds=limits.chunk_seconds,
        )

    def progress(done: int, total: int) -> None:
        rt.store.set_progress(job.id, job.attempts, done, total, "frames")

    return TrackContext(
        tracker=rt.models.get_video(spec.model.value),
        fetch=lambda ref: rt.media.fetch(ref, job.tenant),
        results=results,
        progress=progress,
        limits=limits,
    )


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
    data = rt.media.fetch(image, job.tenant)
    image_id = hashlib.sha256(data).hexdigest()
    key = keys.embedding(job.tenant, kind, encoder.image_size, image_id)
    embedding, source = _cached_embedding(key, rt, load)
    if embedding is not None:
        return Obtained(embedding, image_id, source)
    decoded = decode_image(data, rt.max_image_pixels)
    checkpoint()
    started = time.perf_counter()
    embedding = encoder.encode(decoded)
    rt.embeddings.put(key, embedding)
    return Obtained(embedding, image_id, "miss", (time.perf_counter() - started) * 1000)


def _cached_embedding(key: str, rt: Runtime, load: Callable[[bytes], E]) -> tuple[E | None, str]:
    found = rt.embeddings.get(key)
    if found is not None:
        return cast(E, found), "memory"  # keys carry the model kind, so the entry is of this kind
    try:
        data = rt.objects.get(key)
    except ObjectNotFoundError:
        return None, "miss"
    except BackendError as e:
        log.warning("shared embedding tier unreadable (%s); encoding instead", e)
        return None, "miss"
    try:
        embedding = load(data)
    except ValueError as e:
        log.warning("shared embedding %s is unreadable (%s); encoding instead", key, e)
        return None, "miss"
    rt.embeddings.put(key, embedding)
    return embedding, "shared"


def _visual_prompt(prompt: Prompt, job: Job, objects: ObjectStore, low_res_size: int) -> VisualPrompt:
    coords = np.array([[p.x, p.y] for p in prompt.points], dtype=np.float32) if prompt.points else None
    labels = np.array([int(p.positive) for p in prompt.points], dtype=np.int32) if prompt.points else None
    box = (
        np.array([prompt.box.x0, prompt.box.y0, prompt.box.x1, prompt.box.y1], dtype=np.float32) if prompt.box else None
    )
    mask_input = None
    if prompt.mask_input is not None:
        mask_input = _load_mask_input(job.tenant, prompt.mask_input.job, prompt.mask_input.index, objects, low_res_size)
    return VisualPrompt(point_coords=coords, point_labels=labels, box=box, mask_input=mask_input)


def _load_mask_input(tenant: str, job_id: str, index: int, objects: ObjectStore, side: int) -> np.ndarray:
    try:
        stored = objects.get(keys.job_file(tenant, job_id, LOW_RES_LOGITS))
    except ObjectNotFoundError as e:
        raise MaskInputNotFoundError(f"job {job_id} has no stored low-res masks (not a succeeded segment job)") from e
    except BackendError as e:
        raise StorageUnavailableError(f"could not read the mask input of job {job_id}: {e}") from e
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


def _put(objects: ObjectStore, key: str, data: bytes) -> None:
    try:
        objects.put(key, data)
    except BackendError as e:
        raise StorageUnavailableError(f"could not write {key}: {e}") from e
