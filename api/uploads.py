"""Uploads (media bytes for later jobs) and the local backend's presigned downloads."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import warnings

from flask import Blueprint, Response, jsonify, request, send_file
from PIL import Image

from api.context import services, tenant
from api.errors import ApiError
from storage import keys
from storage.local import LocalStore
from tasks.jobs import new_id, utcnow
from tasks.uploads import Upload

bp = Blueprint("uploads", __name__)
ACCEPTED_TYPES = ("image/", "video/", "application/octet-stream", "application/x-ndjson", "application/jsonl")


@bp.post("/v1/uploads")
def create_upload() -> tuple[Response, int]:
    limit = services().api.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"uploads are limited to {limit} bytes (SAMQ_API_MAX_UPLOAD_BYTES)")
    request.max_content_length = limit + 64 * 1024  # multipart framing on top of the file itself
    if request.mimetype == "multipart/form-data":
        file = request.files.get("file")
        if file is None:
            raise ApiError(400, "missing_file", "multipart uploads carry the media in the field 'file'")
        data, content_type = file.read(limit + 1), file.mimetype or "application/octet-stream"
    else:
        data, content_type = request.get_data(), request.mimetype or "application/octet-stream"
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"uploads are limited to {limit} bytes (SAMQ_API_MAX_UPLOAD_BYTES)")
    if not data:
        raise ApiError(400, "empty_upload", "the upload is empty")
    if not content_type.startswith(ACCEPTED_TYPES):
        raise ApiError(415, "unsupported_media_type", f"{content_type} is not an image, video or JSONL manifest")
    upload = store_upload(data, content_type)
    body = {"id": upload.id, "bytes": upload.bytes, "sha256": upload.sha256, "content_type": upload.content_type}
    return jsonify(body), 201


def store_upload(data: bytes, content_type: str) -> Upload:
    svc = services()
    upload_id = new_id("upl")
    key = keys.upload(tenant(), upload_id)
    svc.storage_slots.call(lambda: svc.objects.put(key, data, content_type))
    upload = Upload(
        id=upload_id,
        tenant=tenant(),
        key=key,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        created_at=utcnow(),
        **_image_size(data),
    )
    svc.uploads.add(upload)
    return upload


def _image_size(data: bytes) -> dict[str, int | bool]:
    """Width and height from the image header (nothing is decoded); empty for anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return {"oversized": True}
    except Exception:  # not an image PIL reads: the worker reports it precisely
        return {}
    return {"width": width, "height": height}


@bp.get("/v1/files/<path:key>")
def download(key: str) -> Response:
    """Serves presigned GETs of the local backend (S3 presigned URLs point at S3 itself)."""
    objects = services().objects
    if not isinstance(objects, LocalStore):
        raise ApiError(404, "not_found", "files are served by the object store")
    try:
        expires = int(request.args.get("expires", ""))
    except ValueError as e:
        raise ApiError(403, "invalid_signature", "missing or malformed expires") from e
    if not objects.verify_presigned(key, expires, request.args.get("signature", "")):
        raise ApiError(403, "invalid_signature", "the link is invalid or expired")
    try:
        path = objects.path_for(key)
    except ValueError as e:
        raise ApiError(404, "not_found", "no such file") from e
    if not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return send_file(path, mimetype=mimetype, max_age=0)
