"""samq's errors, one tree: every failure has a stable snake_case ``code``.

Job errors end a job (``status=failed``, ``error.code``): ``PermanentError`` means re-running cannot help (bad
input, missing model), so the job fails at once; ``TransientError`` means the world may heal (storage or network
hiccup), so the job is retried up to the attempt cap. Request errors (the end of this module) are what the job
store refuses to do for a client; the API maps each class to an HTTP status in one place (``api.errors``).
"""

from __future__ import annotations


class SamqError(Exception):
    """Root of every error samq raises on purpose."""

    code = "internal_error"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(SamqError):
    """A failure that re-running the job cannot fix."""


class TransientError(SamqError):
    """A failure that may pass: the job is retried with backoff, up to the attempt cap."""

    code = "transient_error"
    retryable = True


class InvalidImageError(PermanentError):
    """The bytes look like a supported image format but cannot be decoded."""

    code = "invalid_image"


class InvalidBase64Error(PermanentError):
    """``image.base64`` does not decode."""

    code = "invalid_base64"


class UnsupportedMediaError(PermanentError):
    """The bytes are not an image format samq can read (a text file, say)."""

    code = "unsupported_media_type"


class ImageTooLargeError(PermanentError):
    """The decoded image would exceed the pixel limit (decompression bomb guard)."""

    code = "image_too_large"


class MediaTooLargeError(PermanentError):
    """A downloaded or stored media object exceeds the byte limit."""

    code = "media_too_large"


class MediaNotFoundError(PermanentError):
    """A referenced upload, object or URL does not exist."""

    code = "media_not_found"


class UnresolvableHostError(MediaNotFoundError):
    """A URL's host name does not resolve (reported as ``media_not_found``, like any other missing media)."""


class UrlRefusedError(PermanentError):
    """A URL samq must not use: a forbidden address (loopback, private, …), not http(s), too many redirects, a 4xx."""

    code = "url_refused"


class MediaFetchError(TransientError):
    """A media download failed in a way that may pass (timeout, 5xx, refused connection)."""

    code = "media_fetch_failed"


class PromptOutOfBoundsError(PermanentError):
    """A point or box lies outside the image."""

    code = "prompt_out_of_bounds"


class EmbeddingNotFoundError(PermanentError):
    """A segment job named an ``image_id`` whose embedding is not cached for this model."""

    code = "embedding_not_found"


class MaskInputNotFoundError(PermanentError):
    """A ``mask_input`` names a job or instance index that has no stored low-res logits."""

    code = "mask_input_not_found"


class MaskInputMismatchError(PermanentError):
    """A ``mask_input`` comes from a model of another input size than this job's."""

    code = "mask_input_mismatch"


class ModelUnavailableError(PermanentError):
    """The model's weights are neither in the models directory nor downloadable."""

    code = "model_unavailable"


class StorageUnavailableError(TransientError):
    """The object store could not be reached or answered with a server error."""

    code = "storage_unavailable"


class BrokerUnavailableError(TransientError):
    """The job's message could not be sent to the broker."""

    code = "broker_unavailable"


class WorkerLostError(PermanentError):
    """The job killed (or lost) its worker on every attempt up to the cap."""

    code = "worker_lost"


class JobTimeoutError(PermanentError):
    """The job ran past its time limit."""

    code = "timeout"


class InvalidVideoError(PermanentError):
    """The bytes are not a video samq can decode (not a container, no video stream, truncated, corrupt)."""

    code = "invalid_video"


class EmptyVideoError(PermanentError):
    """The video decodes but holds no frames (or none in the requested ``frames`` range)."""

    code = "empty_video"


class VideoTooLongError(PermanentError):
    """The video (or its selected range) lasts longer, or has more frames, than the worker's limits."""

    code = "video_too_long"


class VideoTooLargeError(PermanentError):
    """The video's frames have more pixels than the worker's resolution limit."""

    code = "video_too_large"


class SeedFrameOutOfRangeError(PermanentError):
    """An object is seeded on a frame the job does not process (past the end, or skipped by stride / max_fps)."""

    code = "seed_frame_out_of_range"


class InvalidDetectionsError(PermanentError):
    """The per-frame detections file is not JSONL of ``{"frame": i, "boxes": [...]}``, or a box is invalid."""

    code = "invalid_detections"


class TooManyObjectsError(PermanentError):
    """Tracking would follow more objects at once than the worker's ``max_track_objects``."""

    code = "too_many_objects"


class InvalidManifestError(PermanentError):
    """A batch manifest line is not a valid item (the message names the line)."""

    code = "invalid_manifest"


class InvalidItemError(PermanentError):
    """A batch item does not make a valid job with the batch's template (e.g. no prompts anywhere)."""

    code = "invalid_item"


class EmptyBatchError(PermanentError):
    """A batch's inputs hold no item (an empty prefix, an empty manifest)."""

    code = "empty_batch"


class BatchTooLargeError(PermanentError):
    """A batch's inputs hold more items than the server takes in one batch."""

    code = "batch_too_large"


class FailureRateExceededError(PermanentError):
    """More of the batch's items failed than its ``max_failure_rate`` allows."""

    code = "failure_rate_exceeded"


# ---- request errors: what the job store refuses a client ------------------------------------------------------


class RequestError(SamqError):
    """The client asked for something the job store refuses; never a job's outcome."""


class IllegalTransitionError(RequestError):
    """A transition the state machine forbids (e.g. anything out of a terminal state)."""

    code = "illegal_transition"

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id} cannot go from {current} to {target}")
        self.current = current
        self.target = target


class JobNotCancelableError(IllegalTransitionError):
    """A cancel request for a job that already ended."""

    code = "job_not_cancelable"

    def __init__(self, job_id: str, current: str) -> None:
        super().__init__(job_id, current, "canceled")
        self.message = f"job {job_id} is already {current}"


class QuotaExceededError(RequestError):
    """The tenant already has as many unfinished jobs as it may."""

    code = "too_many_jobs"

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"this tenant has {active} unfinished jobs; the limit is {limit} (SAMQ_API_MAX_QUEUED_JOBS)")
        self.active = active
        self.limit = limit


class IdempotencyKeyReusedError(RequestError):
    """The ``Idempotency-Key`` was first used with a different body (for ``job_id``)."""

    code = "idempotency_key_reused"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"this Idempotency-Key was first used with a different body (job {job_id}); use a new key")
        self.job_id = job_id


class InvalidCursorError(RequestError):
    """A listing cursor that the job store did not hand out."""

    code = "validation_error"
    field = "cursor"
