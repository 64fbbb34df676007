"""What a job is read ahead for (``worker.pipeline.images.read_ahead``): its image, and its embedding's shared-tier
entry when the upload's record names the image's hash and the model is loaded; nothing it will not read."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any, cast

import pytest

from storage import keys
from tasks.jobs import Job, new_job
from tasks.specs import EmbedSpec, SegmentSpec
from tasks.track_specs import TrackSpec
from worker.pipeline.context import Runtime
from worker.pipeline.images import read_ahead
from worker.pipeline.overlap import ReadAhead, media_key

DIGEST = "ab" * 32
MODEL = "sam2.1_hiera_tiny"


def run_now(read: Any) -> Future[bytes]:
    """``JobObjects.start`` in this thread: the read is done when started."""
    done: Future[bytes] = Future()
    done.set_result(read())
    return done


def runtime(loaded: bool = True, cached: bool = False, digest: str | None = DIGEST) -> tuple[Runtime, ReadAhead]:
    ahead = ReadAhead(run_now)
    embedding_key = keys.embedding("t", MODEL, 256, DIGEST)
    rt = SimpleNamespace(
        ahead=ahead,
        models=SimpleNamespace(input_size=lambda model_id, concept=False: 256 if loaded else None),
        media=SimpleNamespace(digest=lambda ref, tenant: digest, fetch=lambda ref, tenant: b"image"),
        objects=SimpleNamespace(get=lambda key: b"embedding"),
        embeddings={embedding_key} if cached else set(),
    )
    return cast(Runtime, rt), ahead


def job(image: dict[str, Any], kind: str = "segment") -> Job:
    spec = (EmbedSpec if kind == "embed" else SegmentSpec).model_validate(
        {"type": kind, "model": MODEL, "image": image}
    )
    return new_job(spec, "t")


def test_an_upload_is_read_ahead_with_its_shared_tier_entry() -> None:
    rt, ahead = runtime()
    upload = job({"upload": "upl_1"})
    read_ahead(upload, rt)
    image = ahead.take(media_key("t", upload.spec.image.model_dump_json()))  # type: ignore[union-attr]
    shared = ahead.take(keys.embedding("t", MODEL, 256, DIGEST))
    assert image is not None and image.result() == b"image"
    assert shared is not None and shared.result() == b"embedding"


@pytest.mark.parametrize(
    ("case", "options", "expect_image", "expect_shared"),
    [
        ("embedding held by this process", {"cached": True}, False, False),
        ("model not loaded: its input size is unknown", {"loaded": False}, True, False),
        ("no recorded hash (a URL, an s3 object)", {"digest": None}, True, False),
    ],
)
def test_only_what_the_job_will_read_is_read(
    case: str, options: dict[str, Any], expect_image: bool, expect_shared: bool
) -> None:
    rt, ahead = runtime(**options)
    upload = job({"upload": "upl_1"})
    read_ahead(upload, rt)
    assert (media_key("t", upload.spec.image.model_dump_json()) in ahead) is expect_image, case  # type: ignore[union-attr]
    assert (keys.embedding("t", MODEL, 256, DIGEST) in ahead) is expect_shared, case


def test_an_embed_job_is_read_ahead_a_cached_image_id_and_a_video_are_not() -> None:
    rt, ahead = runtime()
    embed = job({"upload": "upl_2"}, kind="embed")
    read_ahead(embed, rt)
    assert media_key("t", embed.spec.image.model_dump_json()) in ahead  # type: ignore[union-attr]

    rt, ahead = runtime()
    read_ahead(job({"image_id": DIGEST}), rt)  # its embedding is looked up by the job itself: nothing to read
    video = TrackSpec.model_validate(
        {
            "type": "track",
            "video": {"upload": "upl_3"},
            "objects": [{"id": 1, "frame": 0, "points": [{"x": 1, "y": 1}]}],
        }
    )
    read_ahead(new_job(video, "t"), rt)  # a video is streamed by its job, never read whole
    assert len(ahead) == 0
