"""``GET /v1/jobs/{id}/input``: a job's request as stored and a link to its media, for the results viewer (which
draws the masks over the image or video the job read; the API itself never decodes media)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.context import services, tenant
from api.errors import ApiError
from tasks.batch_specs import BatchSpec, ItemsInputs, PrefixInputs
from tasks.jobs import Job
from tasks.specs import MediaRef, S3Image, UploadImage, UrlImage, validation_details
from tasks.track_specs import TrackSpec
from tasks.views import Timestamp, View

bp = Blueprint("inputs", __name__)


class InputQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Annotated[int, Field(ge=0)] | None = None
    """A batch item's index: its own media reference instead of the batch's request."""


class MediaLink(View):
    url: str
    """A presigned link to the upload or S3 object, or the job's own ``url`` reference as it was given."""
    expires_at: Timestamp | None
    content_type: str | None


class JobInput(View):
    request: dict[str, Any]
    """The job's spec as stored (a base64 image is an upload by then); for ``?item=``, the batch item."""
    media: MediaLink | None
    """Where a browser can read the image or video; null when there is none to read (an ``image_id`` or a batch
    reference, an expired upload, an item of a manifest)."""


@bp.get("/v1/jobs/<job_id>/input")
def job_input(job_id: str) -> Response:
    try:
        query = InputQuery.model_validate(request.args.to_dict())
    except ValidationError as e:
        raise ApiError(422, "validation_error", "invalid query parameters", validation_details(e)) from e
    job = services().jobs.get(job_id, tenant())
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    if query.item is None:
        spec = job.spec
        media = spec.video if isinstance(spec, TrackSpec) else getattr(spec, "image", None)
        answer = JobInput(request=spec.model_dump(mode="json"), media=_link(media))
    else:
        item, media = _item(job, query.item)
        answer = JobInput(request=item, media=_link(media))
    return jsonify(answer.model_dump(mode="json"))


def _item(job: Job, index: int) -> tuple[dict[str, Any], MediaRef | None]:
    """Batch item ``index`` and its media: as listed in the request, or as an S3 prefix listing named it (its key
    below a prefix that ends in ``/``); of a manifest's items only the name is kept."""
    if not isinstance(job.spec, BatchSpec):
        raise ApiError(404, "item_not_found", f"job {job.id} is a {job.type} job; only batch jobs have items")
    inputs = job.spec.inputs
    if isinstance(inputs, ItemsInputs):
        if index >= len(inputs.items):
            raise ApiError(404, "item_not_found", f"job {job.id} has no item {index} (it has {len(inputs.items)})")
        item = inputs.items[index]
        return item.model_dump(mode="json", exclude_none=True), item.media
    record = services().batches.item(job.id, index)
    if record is None:
        raise ApiError(404, "item_not_found", f"item {index} of job {job.id} has no outcome (yet)")
    if isinstance(inputs, PrefixInputs):
        bucket, prefix = inputs.bucket_and_prefix
        if prefix == "" or prefix.endswith("/"):  # else the listing's name lost where the prefix ended
            s3 = S3Image(s3=f"s3://{bucket}/{prefix}{record.name}")
            return {"s3": s3.s3, "name": record.name}, s3
    return {"name": record.name}, None


def _link(media: object) -> MediaLink | None:
    svc = services()
    seconds = svc.storage.presign_seconds
    if isinstance(media, UrlImage):
        return MediaLink(url=media.url, expires_at=None, content_type=None)
    if isinstance(media, UploadImage):
        upload = svc.uploads.get(media.upload, tenant())
        if upload is None:
            return None
        signed = svc.objects.presign_get(upload.key, seconds)
        return MediaLink(url=signed.url, expires_at=signed.expires_at, content_type=upload.content_type)
    if isinstance(media, S3Image) and svc.storage.backend == "s3":
        from storage.s3 import S3Store

        bucket, _, key = media.s3.removeprefix("s3://").partition("/")
        if bucket not in svc.storage.readable_buckets:
            return None
        signed = cast(S3Store, svc.objects).for_bucket(bucket).presign_get(key, seconds)
        return MediaLink(url=signed.url, expires_at=signed.expires_at, content_type=None)
    return None
