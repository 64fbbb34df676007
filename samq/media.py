"""What the client accepts as an image or a video, turned into a media reference of the API (uploading bytes)."""

from __future__ import annotations

import io
import mimetypes
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

Media: TypeAlias = "str | os.PathLike[str] | bytes | Mapping[str, Any] | Any"
"""A path, raw bytes, a numpy array (H×W or H×W×3 RGB, uint8), a PIL image, an id (``upl_…``), a URL
(``https://…``, ``s3://…``) or a media reference dict (``{"upload": …}``, ``{"image_id": …}``, …)."""

Uploader: TypeAlias = Callable[[bytes, str], Mapping[str, Any]]
"""``(data, content_type) → the upload's record`` (``Client.upload``)."""

OCTET_STREAM = "application/octet-stream"


def media_ref(media: Media, upload: Uploader) -> dict[str, Any]:
    """The API's reference to ``media``, uploading it first when it is local (a file, bytes, an array, an image)."""
    if isinstance(media, Mapping):
        return dict(media)
    if isinstance(media, str):
        if media.startswith("upl_"):
            return {"upload": media}
        if media.startswith(("http://", "https://")):
            return {"url": media}
        if media.startswith("s3://"):
            return {"s3": media}
    if isinstance(media, str | os.PathLike):
        path = Path(media)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (nor an upl_ id, http(s):// or s3:// URL)")
        return {"upload": upload(path.read_bytes(), content_type_of(path))["id"]}
    if isinstance(media, bytes | bytearray | memoryview):
        return {"upload": upload(bytes(media), OCTET_STREAM)["id"]}
    return {"upload": upload(png_of(media), "image/png")["id"]}


def content_type_of(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or OCTET_STREAM


def png_of(image: Any) -> bytes:
    """PNG bytes of a PIL image or a numpy array (H×W grey or H×W×3 RGB, uint8)."""
    from PIL import Image  # not imported with the client: only where an array or image is sent

    if not isinstance(image, Image.Image):
        if not (hasattr(image, "shape") and hasattr(image, "dtype")):
            raise TypeError(f"cannot send a {type(image).__name__} as media: give a path, bytes, an array or an image")
        if str(image.dtype) != "uint8" or len(image.shape) not in (2, 3) or image.shape[2:] not in ((), (3,), (4,)):
            raise ValueError(f"an image array must be H×W or H×W×3 uint8 RGB, not {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
