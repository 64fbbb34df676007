"""Plumbing shared by the two SAM3 video runners (``sam3_tracker_video``, ``sam3_concept_video``): sessions of known
length fed one frame at a time, pruning what the model can no longer read, and snapshots to resume from.

transformers' tracker session and the concept session (``Sam3VideoModel``) keep their tracking state in the same
shape, so one set of functions serves both. What :func:`prune` drops, and why the masks stay exactly those of the
whole-video call, is documented on it and in ``worker.runners.sam3_tracker_video``.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from worker.runners.video import Frames

SNAPSHOT_FORMAT = "samq.sam3_video_session/1"


UPSAMPLE_CHUNK = 8
"""Objects whose masks are upsampled together (a 4K frame is 33 MB of float logits per object)."""


TRACKER_STATE = (
    "_obj_id_to_idx",
    "_obj_idx_to_id",
    "obj_ids",
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "frames_tracked_per_obj",
    "obj_with_new_inputs",
)
"""The attributes of a transformers inference session that hold its tracking state (the object id maps are private
there, and have no setter: they are saved and restored as they are)."""


class KnownLength:
    """Mixin for transformers' inference sessions: ``num_frames`` is the video's length, although the session holds
    at most one frame's pixel values (transformers counts them). Set :attr:`video_length` after construction."""

    video_length: int = 0

    @property
    def num_frames(self) -> int:
        return self.video_length


def new_session(cls: Any, length: int, height: int, width: int, device: str) -> Any:
    """An empty inference session of ``cls`` (a :class:`KnownLength` session) for a ``length``-frame video of
    ``height`` x ``width`` pixels, everything on ``device``: what ``processor.init_video_session()`` makes."""
    session = cls(
        video_height=height,
        video_width=width,
        inference_device=device,
        inference_state_device=device,
        video_storage_device=device,
        dtype=torch.float32,
    )
    session.video_length = length
    return session


def video_geometry(frames: Frames) -> tuple[int, int, int]:
    """``(length, height, width)`` of a video, from its first frame (which is decoded)."""
    if len(frames) == 0:
        raise ValueError("the video has no frames")
    first = frames[0]
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got shape {first.shape} dtype {first.dtype}")
    return len(frames), int(first.shape[0]), int(first.shape[1])


def feed(session: Any, processor: Any, frames: Frames, index: int) -> None:
    """Give frame ``index`` (decoded now) to ``session``, as the model's pixel values (SAM3's image preprocessing)."""
    frame = frames[index]
    expected = (session.video_height, session.video_width, 3)
    if frame.shape != expected or frame.dtype != np.uint8:
        raise ValueError(f"frame {index} is {frame.shape} {frame.dtype}, the video's frames are {expected} uint8")
    pixel_values = processor(images=frame, return_tensors="pt")["pixel_values"]
    session.add_new_frame(pixel_values, frame_idx=index)


def memory_window(config: Any) -> int:
    """Frames of non-conditioning outputs a ``Sam3TrackerVideoConfig``'s model reads back: its memory reaches
    ``num_maskmem - 1`` frames back, its object pointers ``max_object_pointers_in_encoder - 1``."""
    return max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))


def prune(session: Any, horizon: int, config: Any) -> None:
    """Drop from ``session`` what no later forward of a ``config`` tracker reads, once frame ``horizon`` (-1: none
    yet) was processed.

    Later forwards only process frames after ``horizon`` (or, for new seeds, ``horizon`` itself). transformers reads:

    - a non-conditioning output for its memory and object pointer, up to ``memory_window - 1`` frames back (older
      ones go), and never its masks (they go);
    - a conditioning output's low-res masks only when its frame is processed again (they go once it is passed), its
      memory only while it is among the ``max_cond_frame_num`` conditioning frames closest to the frame processed (a
      passed conditioning frame outside the most recent ones never is again: outside the window, its memory goes),
      and its object pointer always (kept);
    - full-resolution mask logits only inside the forward that made them (they go);
    - prompts and "tracked" marks only on the frame being prompted (those of passed frames go);
    - pixel values only while encoding the frame (they go).
    """
    window = memory_window(config)
    max_cond_frames = int(config.max_cond_frame_num)
    if session.processed_frames:
        session.processed_frames.clear()
    for outputs in session.output_dict_per_obj.values():
        cond, other = outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]
        for frame in [frame for frame in other if frame <= horizon - window]:
            del other[frame]
        for out in other.values():
            out.pop("high_res_masks", None)
            out.pop("pred_masks", None)
        passed = sorted(frame for frame in cond if frame < horizon)
        recent = passed if max_cond_frames < 0 else passed[len(passed) - max_cond_frames :]
        for frame, out in cond.items():
            out.pop("high_res_masks", None)
            if frame < horizon:
                out.pop("pred_masks", None)
            if frame < horizon and frame <= horizon - window and frame not in recent:
                out.pop("maskmem_features", None)
                out.pop("maskmem_pos_enc", None)
    per_frame = (
        *session.frames_tracked_per_obj.values(),
        *session.point_inputs_per_obj.values(),
        *session.mask_inputs_per_obj.values(),
    )
    for by_frame in per_frame:
        for frame in [frame for frame in by_frame if frame < horizon]:
            del by_frame[frame]


def plain(value: Any) -> Any:
    """A copy of ``value`` that ``torch.load(..., weights_only=True)`` reads back: tensors copied to the CPU (so a
    slice does not drag its whole batch along), default dicts as plain dicts, other containers as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    if isinstance(value, set):
        return set(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be saved in a session snapshot")


def write_snapshot(payload: dict[str, Any]) -> bytes:
    """``torch.save`` of ``payload`` (made :func:`plain`), tagged with :data:`SNAPSHOT_FORMAT`."""
    buffer = io.BytesIO()
    torch.save(plain({"format": SNAPSHOT_FORMAT, **payload}), buffer)
    return buffer.getvalue()


def read_snapshot(state: bytes, runner: str, image_size: int, length: int, device: str) -> dict[str, Any]:
    """The payload of a :func:`write_snapshot` made by ``runner`` at ``image_size`` for a ``length``-frame video,
    tensors on ``device`` (``weights_only`` loading: no code runs). ``ValueError`` if it is anything else."""
    try:
        payload = torch.load(io.BytesIO(state), map_location=device, weights_only=True)
        found = (payload["format"], payload["runner"], payload["image_size"], payload["video"][0])
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a SAM3 video session snapshot: {type(e).__name__}: {e}") from e
    if found != (SNAPSHOT_FORMAT, runner, image_size, length):
        raise ValueError(
            f"the snapshot is of {found[1]!r} at {found[2]}px on {found[3]} frames ({found[0]}); this session is "
            f"{runner!r} at {image_size}px on {length} frames ({SNAPSHOT_FORMAT})"
        )
    return dict(payload)


def upsample(processor: Any, logits: torch.Tensor, height: int, width: int) -> npt.NDArray[np.bool_]:
    """(N, 1, r, r) mask logits → (N, H, W) bool at the video's size: ``processor.post_process_masks`` (bilinear,
    > 0), :data:`UPSAMPLE_CHUNK` objects at a time."""
    chunks = [
        processor.post_process_masks([logits[start : start + UPSAMPLE_CHUNK]], [[height, width]])[0][:, 0]
        for start in range(0, int(logits.shape[0]), UPSAMPLE_CHUNK)
    ]
    return np.concatenate([chunk.cpu().numpy() for chunk in chunks]) if chunks else np.zeros((0, height, width), bool)
