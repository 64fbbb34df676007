"""SAM2 video tracking that streams: frames decoded on demand, state pruned to what the model can still attend to.

Meta's ``SAM2VideoPredictor.init_state`` loads every frame up front (12.6 MB a frame at 1024²) and keeps every
frame's outputs, although tracking frame ``t`` only reads:

- the conditioning (prompted) frames, all of them (``max_cond_frames_in_attn = -1``) or the closest few;
- the memories of the ``num_maskmem - 1`` frames before ``t`` (every ``memory_temporal_stride_for_eval``-th);
- the object pointers of the ``max_obj_ptrs_in_encoder - 1`` frames before ``t``.

This runner drives the predictor's own methods (``add_new_points_or_box``, ``propagate_in_video``) on a state whose
``images`` decode lazily from a :class:`~worker.runners.video.Frames` sequence, and after every frame deletes the
outputs that fell out of that window. The model therefore computes exactly what the full predictor computes (the
unit tests compare bit for bit) while memory stays flat in video length.

Re-seeding (``every_n_frames`` / ``every_frame``) turns each re-seeded frame into a conditioning frame of its object
(``add_all_frames_to_correct_as_cond``) and attends to the :data:`RESEED_COND_FRAMES` closest of them, so the kept
conditioning frames are bounded too. Without re-seeding the predictor keeps Meta's defaults.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from worker import torchvision_compat
from worker.runners import sam2_build
from worker.runners.video import Frames, FrameTracks, Seed
from worker.settings import WorkerSettings

torchvision_compat.install()  # sam2 imports torchvision; see worker.torchvision_compat

from sam2.build_sam import build_sam2_video_predictor  # noqa: E402

logger = logging.getLogger(__name__)

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
"""Normalization of ``sam2.utils.misc.load_video_frames``."""
RESEED_COND_FRAMES = 8
"""Conditioning frames an object attends to when re-seeded periodically (the closest ones)."""
STATE_FORMAT = 1
_STATE_KEYS = (
    "obj_id_to_idx",
    "obj_idx_to_id",
    "obj_ids",
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
    "constants",
)
"""The parts of the predictor's inference state that carry tracking memory (the rest is rebuilt on resume)."""


class Sam2VideoRunner:
    """A loaded SAM2 video predictor. Build it with :meth:`load`; :meth:`open` a session per video."""

    def __init__(self, model_id: str, predictor: Any) -> None:
        self.model_id = model_id
        self._predictor = predictor
        self.device: str = str(predictor.device.type)
        self.image_size: int = int(predictor.image_size)

    @classmethod
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam2VideoRunner:
        """Build the predictor with Meta's video post-processing settings (``apply_postprocessing``)."""
        canonical, predictor = sam2_build.build(
            model_id, settings, build_sam2_video_predictor, apply_postprocessing=True
        )
        if not sam2_build.has_connected_components():
            predictor.fill_hole_area = 0  # hole filling needs sam2's CUDA extension; without it sam2 only warns
        return cls(canonical, predictor)

    def open(self, frames: Frames, concepts: Sequence[str] = (), *, reseeding: bool = False) -> Sam2VideoSession:
        """A new session over ``frames``; ``reseeding`` for sessions that will re-prompt objects as they go."""
        if concepts:
            raise ValueError("SAM2 tracks seeded objects; text concepts need model 'sam3'")
        return Sam2VideoSession(self._predictor, self._new_state(frames), reseeding)

    def resume(self, frames: Frames, state: bytes, *, reseeding: bool = False) -> Sam2VideoSession:
        """A session that continues where the one that produced ``state`` (:meth:`Sam2VideoSession.snapshot`) was."""
        inference_state = self._new_state(frames)
        try:
            saved = torch.load(io.BytesIO(state), map_location=inference_state["device"], weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt or foreign file
            raise ValueError(f"not a SAM2 tracking state: {e}") from e
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise ValueError("not a SAM2 tracking state of this version")
        shape = (inference_state["num_frames"], inference_state["video_height"], inference_state["video_width"])
        if tuple(saved["video"]) != shape:
            raise ValueError(f"the state was saved for a video of {tuple(saved['video'])}, not {shape}")
        for key in _STATE_KEYS:
            inference_state[key] = saved[key]
        inference_state["obj_id_to_idx"] = OrderedDict(saved["obj_id_to_idx"])
        inference_state["obj_idx_to_id"] = OrderedDict(saved["obj_idx_to_id"])
        return Sam2VideoSession(self._predictor, inference_state, reseeding)

    def _new_state(self, frames: Frames) -> dict[str, Any]:
        """The inference state ``init_state`` builds, with lazily decoded ``images`` and nothing computed yet."""
        if len(frames) == 0:
            raise ValueError("a video session needs at least one frame")
        height, width = frames[0].shape[:2]
        device = self._predictor.device
        return {
            "images": LazyImages(frames, self.image_size),
            "num_frames": len(frames),
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": False,
            "video_height": height,
            "video_width": width,
            "device": device,
            "storage_device": device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }


class LazyImages:
    """``inference_state["images"]`` that decodes frame ``i`` when the predictor asks for it (and keeps nothing).

    The preprocessing is ``load_video_frames``' own: a PIL resize to the model's square input, /255, then the
    ImageNet mean and std, in float32.
    """

    def __init__(self, frames: Frames, image_size: int) -> None:
        self._frames = frames
        self._size = image_size
        self._mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        resized = np.array(Image.fromarray(self._frames[index]).convert("RGB").resize((self._size, self._size)))
        image = torch.from_numpy(resized / 255.0).permute(2, 0, 1).to(torch.float32)
        image -= self._mean
        image /= self._std
        return image


class Sam2VideoSession:
    """One video being tracked by the predictor (see :class:`~worker.runners.video.VideoSession`)."""

    def __init__(self, predictor: Any, state: dict[str, Any], reseeding: bool) -> None:
        self._predictor = predictor
        self._state = state
        self._reseeding = reseeding
        model = predictor
        stride = max(1, int(model.memory_temporal_stride_for_eval))
        self.window = max(int(model.max_obj_ptrs_in_encoder), int(model.num_maskmem) * stride)
        """Non-conditioning outputs older than this many frames are never read again."""

    def add(self, index: int, seeds: Sequence[Seed]) -> FrameTracks:
        if not seeds:
            raise ValueError("add needs at least one seed")
        masks = None
        with self._inference():
            for seed in seeds:
                _, _, masks = self._predictor.add_new_points_or_box(
                    self._state,
                    frame_idx=index,
                    obj_id=seed.obj_id,
                    points=seed.point_coords,
                    labels=seed.point_labels,
                    box=seed.box,
                )
        return self._tracks(index, masks)

    def propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        if not self._state["obj_ids"]:
            raise ValueError("nothing to track: add a seed first")
        steps = self._predictor.propagate_in_video(
            self._state, start_frame_idx=start, max_frame_num_to_track=end - start
        )
        while True:
            with self._inference():
                step = next(steps, None)
            if step is None:
                return
            frame_idx, _, masks = step
            tracks = self._tracks(frame_idx, masks)
            self._prune(frame_idx)
            yield tracks

    def snapshot(self) -> bytes:
        state = self._state
        saved: dict[str, Any] = {key: state[key] for key in _STATE_KEYS}
        saved["obj_id_to_idx"] = dict(state["obj_id_to_idx"])
        saved["obj_idx_to_id"] = dict(state["obj_idx_to_id"])
        saved["format"] = STATE_FORMAT
        saved["video"] = [state["num_frames"], state["video_height"], state["video_width"]]
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        return buffer.getvalue()

    def kept_frames(self) -> dict[int, tuple[list[int], list[int]]]:
        """Per object id: the frame indices whose outputs are held, (conditioning, non-conditioning)."""
        state = self._state
        return {
            state["obj_idx_to_id"][idx]: (sorted(out["cond_frame_outputs"]), sorted(out["non_cond_frame_outputs"]))
            for idx, out in state["output_dict_per_obj"].items()
        }

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """The predictor settings of this session (one predictor serves every session of a process), inference mode
        and bf16 autocast, around each model call only (never across a ``yield``).

        Autocast is not optional, on CPU either: the predictor stores memories in bfloat16 and feeds them back to
        float32 layers, which only autocast reconciles (Meta documents the video predictor under autocast)."""
        self._predictor.add_all_frames_to_correct_as_cond = self._reseeding
        self._predictor.max_cond_frames_in_attn = RESEED_COND_FRAMES if self._reseeding else -1
        with torch.inference_mode(), torch.autocast(self._predictor.device.type, dtype=torch.bfloat16):
            yield

    def _tracks(self, index: int, mask_logits: torch.Tensor | None) -> FrameTracks:
        state = self._state
        obj_ids = [int(i) for i in state["obj_ids"]]
        if mask_logits is None:
            raise ValueError("the predictor returned no masks")
        masks = (mask_logits[:, 0] > 0.0).cpu().numpy()
        scores = np.array([self._presence(idx, index) for idx in range(len(obj_ids))], dtype=np.float32)
        return FrameTracks(index=index, obj_ids=obj_ids, masks=masks, scores=scores)

    def _presence(self, obj_idx: int, index: int) -> float:
        """sigmoid(object score logit) of the object's newest output on ``index``; 0 where it has none yet."""
        for kind in ("temp_output_dict_per_obj", "output_dict_per_obj"):
            outputs = self._state[kind][obj_idx]
            for storage in ("cond_frame_outputs", "non_cond_frame_outputs"):
                out = outputs[storage].get(index)
                if out is not None:
                    return float(torch.sigmoid(out["object_score_logits"].float()).flatten()[0])
        return 0.0

    def _prune(self, index: int) -> None:
        """Drop what tracking ``index + 1`` onwards can no longer read (see the module docstring)."""
        state = self._state
        oldest = index + 1 - self.window
        for obj_idx, outputs in state["output_dict_per_obj"].items():
            _drop_before(outputs["non_cond_frame_outputs"], oldest)
            cond = outputs["cond_frame_outputs"]
            if self._reseeding:
                past = sorted(t for t in cond if t <= index)
                for t in past[: max(0, len(past) - RESEED_COND_FRAMES)]:
                    if t < oldest:
                        del cond[t]
            for per_frame in (state["point_inputs_per_obj"][obj_idx], state["mask_inputs_per_obj"][obj_idx]):
                for t in [t for t in per_frame if t < oldest and t not in cond]:
                    del per_frame[t]
            _drop_before(state["frames_tracked_per_obj"][obj_idx], oldest)


def _drop_before(per_frame: dict[int, Any], oldest: int) -> None:
    for t in [t for t in per_frame if t < oldest]:
        del per_frame[t]
